{{/*
Cross-field checks the JSON schema cannot express; each failure names the values to change.
Included by the Triton Deployment, so every render runs them.
*/}}
{{- define "ufsim.validate" -}}
{{- $t := .Values.triton -}}
{{- $needed := add $t.drain.preStopSleepSeconds $t.exitTimeoutSeconds 5 -}}
{{- if lt (int $t.terminationGracePeriodSeconds) (int $needed) -}}
{{- fail (printf "triton.terminationGracePeriodSeconds (%d) must be at least triton.drain.preStopSleepSeconds (%d) + triton.exitTimeoutSeconds (%d) + 5 = %d, or Kubernetes kills Triton before in-flight requests finish" (int $t.terminationGracePeriodSeconds) (int $t.drain.preStopSleepSeconds) (int $t.exitTimeoutSeconds) (int $needed)) -}}
{{- end -}}
{{- if and .Values.gateway.enabled $t.tls.enabled $t.tls.mutual -}}
{{- fail "triton.tls.mutual=true cannot be combined with gateway.enabled=true: the gateway has no client certificate to present. Terminate client TLS at the gateway (gateway.tls) and set triton.tls.mutual=false" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (eq .Values.autoscaling.engine "keda") (not .Values.autoscaling.keda.prometheusAddress) -}}
{{- fail "autoscaling.engine=keda needs autoscaling.keda.prometheusAddress (the Prometheus KEDA queries, e.g. http://prometheus-operated.monitoring.svc:9090)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is larger than autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.gateway.enabled) .Values.security.requireGateway -}}
{{- fail "ingress.enabled=true exposes Triton's gRPC port without authentication or rate limits; enable the gateway (gateway.enabled=true) or set security.requireGateway=false to accept that" -}}
{{- end -}}
{{- end -}}
