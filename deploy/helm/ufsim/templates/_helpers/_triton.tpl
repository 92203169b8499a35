{{/* Where Triton reads the model repository: the s3:// URI, or the mount path of the PVC or copied image. */}}
{{- define "ufsim.triton.modelRepository" -}}
{{- if eq .Values.modelRepository.source "s3" -}}
{{- .Values.modelRepository.s3.uri -}}
{{- else -}}
{{- .Values.modelRepository.mountPath -}}
{{- end -}}
{{- end -}}

{{/* Mount path of the gRPC TLS Secret inside the Triton container. */}}
{{- define "ufsim.triton.tlsPath" -}}
/etc/ufsim/tls
{{- end -}}

{{/*
The tritonserver arguments (a YAML list). Same portable flags as deploy/local's command_line()
(--strict-readiness, --exit-on-error); GPU-only flags appear only when GPUs are requested.
$(UFSIM_ADMIN_KEY) is expanded by the kubelet from the container's environment (a Secret).
*/}}
{{- define "ufsim.triton.args" -}}
{{- $t := .Values.triton -}}
- --model-repository={{ include "ufsim.triton.modelRepository" . }}
- --http-port={{ $t.ports.http }}
- --grpc-port={{ $t.ports.grpc }}
- --metrics-port={{ $t.ports.metrics }}
- --strict-readiness=true
- --exit-on-error=true
- --exit-timeout-secs={{ $t.exitTimeoutSeconds }}
- --model-control-mode={{ $t.modelControlMode }}
{{- if eq $t.modelControlMode "poll" }}
- --repository-poll-secs={{ $t.repositoryPollSeconds }}
{{- end }}
- --allow-metrics=true
- --log-verbose={{ $t.logVerbose }}
{{- with .Values.security.restrictedProtocols }}
{{- if .enabled }}
- --grpc-restricted-protocol={{ join "," .protocols }}:{{ .header }}=$(UFSIM_ADMIN_KEY)
- --http-restricted-api={{ join "," .protocols }}:{{ .header }}=$(UFSIM_ADMIN_KEY)
{{- end }}
{{- end }}
{{- if $t.tls.enabled }}
- --grpc-use-ssl=true
- --grpc-server-cert={{ include "ufsim.triton.tlsPath" . }}/tls.crt
- --grpc-server-key={{ include "ufsim.triton.tlsPath" . }}/tls.key
{{- if $t.tls.mutual }}
- --grpc-root-cert={{ include "ufsim.triton.tlsPath" . }}/ca.crt
- --grpc-use-ssl-mutual=true
{{- end }}
{{- end }}
{{- if gt (int $t.gpu.count) 0 }}
- --allow-gpu-metrics=true
{{- if gt (int64 $t.gpu.cudaMemoryPoolByteSize) 0 }}
{{- range $i := until (int $t.gpu.count) }}
- --cuda-memory-pool-byte-size={{ $i }}:{{ int64 $t.gpu.cudaMemoryPoolByteSize }}
{{- end }}
{{- end }}
{{- if gt (int64 $t.gpu.pinnedMemoryPoolByteSize) 0 }}
- --pinned-memory-pool-byte-size={{ int64 $t.gpu.pinnedMemoryPoolByteSize }}
{{- end }}
{{- end }}
{{- range $t.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Container resources, with the GPU count added to requests and limits when GPUs are asked for. */}}
{{- define "ufsim.triton.resources" -}}
{{- $t := .Values.triton -}}
{{- $res := deepCopy $t.resources -}}
{{- if gt (int $t.gpu.count) 0 -}}
{{- $_ := set $res "limits" (merge (dict $t.gpu.resourceName (int $t.gpu.count)) (default (dict) $res.limits)) -}}
{{- $_ := set $res "requests" (merge (dict $t.gpu.resourceName (int $t.gpu.count)) (default (dict) $res.requests)) -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}
