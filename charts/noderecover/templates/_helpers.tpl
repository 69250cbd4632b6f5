{{/* Name of every object: fullnameOverride, else nameOverride, else "noderecover". */}}
{{- define "noderecover.fullname" -}}
{{- default (default "noderecover" .Values.nameOverride) .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* The pod's ServiceAccount: the chart's (serviceAccount.create) or the one named. */}}
{{- define "noderecover.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "noderecover.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: the ServiceAccount to use when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The selector labels: the same as manifests/ (the alerts' job label comes from it). */}}
{{- define "noderecover.selectorLabels" -}}
app.kubernetes.io/name: noderecover
{{- end -}}

{{- define "noderecover.labels" -}}
{{ include "noderecover.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* One flag as an argument: bool -> --flag / --no-flag; null or "" -> nothing. */}}
{{- define "noderecover.flag" -}}
{{- $name := index . 0 -}}
{{- $value := index . 1 -}}
{{- if kindIs "bool" $value -}}
- --{{ if not $value }}no-{{ end }}{{ $name }}
{{- else if not (kindIs "invalid" $value) -}}
{{- $text := toString $value -}}
{{- if and (kindIs "float64" $value) (eq (float64 (int64 $value)) $value) -}}
{{- $text = toString (int64 $value) -}}
{{- end -}}
{{- if ne $text "" -}}
- {{ printf "--%s=%s" $name $text | quote }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The port of --http-bind (host:port). */}}
{{- define "noderecover.port" -}}
{{- $bind := toString (index .Values.flags "http-bind") -}}
{{- last (splitList ":" $bind) -}}
{{- end -}}
