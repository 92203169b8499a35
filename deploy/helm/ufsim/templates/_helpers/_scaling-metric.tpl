{{/*
Label matchers that select this release's Triton series in Prometheus, e.g. namespace="sim",service="ufsim".
Defaults to the labels the Prometheus Operator adds when it scrapes the chart's ServiceMonitor;
autoscaling.metricLabels replaces them (sorted by label name).
*/}}
{{- define "ufsim.scaling.selector" -}}
{{- $labels := .Values.autoscaling.metricLabels -}}
{{- if not $labels -}}
{{- $labels = dict "namespace" .Release.Namespace "service" (include "ufsim.fullname" .) -}}
{{- end -}}
{{- $out := list -}}
{{- range $k := keys $labels | sortAlpha -}}
{{- $out = append $out (printf "%s=%q" $k (get $labels $k)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/*
Queue time per request (microseconds) of each composing model, one series per model:
  sum by (model)(rate(nv_inference_queue_duration_us[w])) / sum by (model)(rate(nv_inference_request_success[w]))
over the models in autoscaling.composingModels (never the ensemble: its requests are handed straight to
the first step and never show as queued). Dividing by requests, not by batch executions, keeps the value
per request however large Triton's dynamic batches are. Idle models give 0, not NaN.
Call with (dict "ctx" $ "selector" "<label matchers>" "window" "1m").
*/}}
{{- define "ufsim.scaling.queueTimeByModel" -}}
{{- $m := printf "%s,model=~%q" .selector (join "|" .ctx.Values.autoscaling.composingModels) | trimPrefix "," -}}
{{- printf "sum by (model) (rate(nv_inference_queue_duration_us{%s}[%s])) / clamp_min(sum by (model) (rate(nv_inference_request_success{%s}[%s])), 1e-9)" $m .window $m .window -}}
{{- end -}}

{{/*
The autoscaling metric: the largest per-request queue time among the composing models (the bottleneck
step), 0 when nothing is scraped. Written once; KEDA, the HPA recording rule and the dashboard use it.
*/}}
{{- define "ufsim.scaling.queueTimeQuery" -}}
{{- printf "max(%s) or vector(0)" (include "ufsim.scaling.queueTimeByModel" (dict "ctx" . "selector" (include "ufsim.scaling.selector" .) "window" .Values.autoscaling.window)) -}}
{{- end -}}
