{{/* The release's resource name: the release name, or RELEASE-kferry when it lacks "kferry". */}}
{{- define "kferry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kferry.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kferry.labels" -}}
{{ include "kferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
The config file as it goes into the ConfigMap. A map (values.yaml) gets metrics.listen
unless it sets one; a string (--set-file config=FILE) is kept as it is. Either way
metrics.listen must be 0.0.0.0:<metrics.port>, which the probes and the Service use.
*/}}
{{- define "kferry.config" -}}
{{- $listen := printf "0.0.0.0:%v" .Values.metrics.port -}}
{{- if kindIs "string" .Values.config -}}
{{- $parsed := fromYaml .Values.config -}}
{{- if hasKey $parsed "Error" -}}
{{- fail (printf "config: not YAML: %s" (get $parsed "Error")) -}}
{{- end -}}
{{- $metrics := get $parsed "metrics" | default dict -}}
{{- $given := get $metrics "listen" | default "" | toString -}}
{{- if ne $given $listen -}}
{{- $shown := ternary "has none" (printf "says %q" $given) (eq $given "") -}}
{{- fail (printf "config: metrics.listen must be %q (the probes and the Service use metrics.port %v); the file %s" $listen .Values.metrics.port $shown) -}}
{{- end -}}
{{- .Values.config -}}
{{- else -}}
{{- $config := deepCopy (.Values.config | default dict) -}}
{{- $metrics := get $config "metrics" | default dict -}}
{{- if not (hasKey $metrics "listen") -}}
{{- $_ := set $metrics "listen" $listen -}}
{{- end -}}
{{- $given := get $metrics "listen" | toString -}}
{{- if ne $given $listen -}}
{{- fail (printf "config: metrics.listen must be %q (the probes and the Service use metrics.port %v); values say %q" $listen .Values.metrics.port $given) -}}
{{- end -}}
{{- $_ := set $config "metrics" $metrics -}}
{{- toYaml $config -}}
{{- end -}}
{{- end -}}

{{/* "true" when the config has a `group` section (processes sharing the flows), else empty. */}}
{{- define "kferry.grouped" -}}
{{- $config := .Values.config -}}
{{- if kindIs "string" $config -}}
{{- $config = fromYaml $config -}}
{{- end -}}
{{- if hasKey ($config | default dict) "group" -}}true{{- end -}}
{{- end -}}

{{/* The replica count: more than one only with a group. */}}
{{- define "kferry.replicas" -}}
{{- $replicas := int .Values.replicas -}}
{{- if lt $replicas 1 -}}
{{- fail (printf "replicas: %d; at least 1" $replicas) -}}
{{- end -}}
{{- if and (gt $replicas 1) (not (include "kferry.grouped" .)) -}}
{{- fail (printf "replicas: %d needs a `group` section in config, so the processes share the flows' shards instead of fencing each other" $replicas) -}}
{{- end -}}
{{- $replicas -}}
{{- end -}}
