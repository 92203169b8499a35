{{/* HPA scaling behaviour (shared by the HPA and KEDA's generated HPA); values are used as given, 0 included. */}}
{{- define "ufsim.autoscaling.behavior" -}}
{{- with .Values.autoscaling.behavior -}}
scaleUp:
  stabilizationWindowSeconds: {{ .scaleUp.stabilizationWindowSeconds }}
  policies:
    - type: Pods
      value: {{ .scaleUp.podsPerPeriod }}
      periodSeconds: {{ .scaleUp.periodSeconds }}
scaleDown:
  stabilizationWindowSeconds: {{ .scaleDown.stabilizationWindowSeconds }}
  policies:
    - type: Pods
      value: {{ .scaleDown.podsPerPeriod }}
      periodSeconds: {{ .scaleDown.periodSeconds }}
{{- end -}}
{{- end -}}
