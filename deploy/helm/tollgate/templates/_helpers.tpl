{{/* Chart name, overridable with nameOverride. */}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: the release name, followed by the chart name unless
the release name already contains it. Kubernetes names are at most 63 characters.
*/}}
{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tollgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret whose keys become the container's environment, or "" for none. */}}
{{- define "tollgate.secretName" -}}
{{- if .Values.providerKeys.existingSecret }}
{{- .Values.providerKeys.existingSecret }}
{{- else if .Values.providerKeys.values }}
{{- printf "%s-provider-keys" (include "tollgate.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The parsed `config`, checked against the chart's ports so probes, Services and scrapes
reach the listeners the gateway really opens.
*/}}
{{- define "tollgate.checkConfig" -}}
{{- /* The gateway's own defaults apply to what the config leaves out. */}}
{{- $cfg := fromYaml .Values.config }}
{{- if hasKey $cfg "Error" }}
{{- fail (printf "config is not valid YAML: %s" (get $cfg "Error")) }}
{{- end }}
{{- $server := get $cfg "server" | default dict }}
{{- $admin := "127.0.0.1:9090" }}
{{- if hasKey $server "admin_listen" }}{{ $admin = get $server "admin_listen" | default "" | toString }}{{ end }}
{{- if not (hasSuffix (printf ":%v" .Values.ports.admin) $admin) }}
{{- fail (printf "config server.admin_listen (%q) must listen on ports.admin (%v): the probes and /metrics use it" $admin .Values.ports.admin) }}
{{- end }}
{{- if or (hasPrefix "127." $admin) (hasPrefix "localhost:" $admin) (hasPrefix "[::1]:" $admin) }}
{{- fail (printf "config server.admin_listen (%q) binds loopback: the kubelet's probes cannot reach it; use \"0.0.0.0:%v\"" $admin .Values.ports.admin) }}
{{- end }}
{{- $listen := get $server "listen" | default (list "0.0.0.0:8080") }}
{{- $http := printf ":%v" .Values.ports.http }}
{{- $found := false }}
{{- range $listen }}
{{- if hasSuffix $http (toString .) }}{{ $found = true }}{{ end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "config server.listen (%v) has no listener on ports.http (%v)" $listen .Values.ports.http) }}
{{- end }}
{{- end }}
