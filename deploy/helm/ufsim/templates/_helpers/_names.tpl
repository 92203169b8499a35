{{/* Chart name, overridable with nameOverride; 63 characters at most. */}}
{{- define "ufsim.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name used for the Triton Deployment and Service; 63 characters at most. */}}
{{- define "ufsim.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a component's objects: "<fullname>-<suffix>"; call with (dict "ctx" $ "suffix" "gateway"). */}}
{{- define "ufsim.componentName" -}}
{{- printf "%s-%s" (include "ufsim.fullname" .ctx | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{/* Chart label value: "<name>-<version>". */}}
{{- define "ufsim.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select a component's pods; call with (dict "ctx" $ "component" "triton"). */}}
{{- define "ufsim.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ufsim.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every object's labels: selector labels, chart, version, manager and commonLabels; same arguments. */}}
{{- define "ufsim.labels" -}}
{{ include "ufsim.selectorLabels" . }}
helm.sh/chart: {{ include "ufsim.chart" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: ufsim
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Image reference from {repository, tag, digest}: the digest wins when set. */}}
{{- define "ufsim.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount the pods run as. */}}
{{- define "ufsim.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ufsim.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the restricted-protocol header value (given, or created by the chart). */}}
{{- define "ufsim.adminKeySecretName" -}}
{{- default (include "ufsim.componentName" (dict "ctx" . "suffix" "admin-key")) .Values.security.restrictedProtocols.existingSecret -}}
{{- end -}}

{{/* In-cluster DNS name of the headless Service listing every Triton pod (the gateway's upstream). */}}
{{- define "ufsim.triton.peersHost" -}}
{{- printf "%s.%s.svc.%s" (include "ufsim.componentName" (dict "ctx" . "suffix" "peers")) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}
