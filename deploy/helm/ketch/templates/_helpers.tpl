{{/*
Names, labels and the settings every Ketch pod shares.
Pod DNS names come from the headless Service: <pod>.<fullname>-headless.<namespace>.svc.<clusterDomain>.
*/}}
{{- define "ketch.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ketch.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ketch.headless" -}}
{{- printf "%s-headless" (include "ketch.fullname" .) }}
{{- end }}

{{- define "ketch.controllerName" -}}
{{- printf "%s-controller" (include "ketch.fullname" .) }}
{{- end }}

{{- define "ketch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "ketch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ketch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ketch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ketch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ketch.clusterId" -}}
{{- default (printf "%s/%s" .Release.Namespace .Release.Name | sha256sum | trunc 32) .Values.clusterId }}
{{- end }}

{{/* The DNS suffix after the pod name: <headless>.<namespace>.svc.<clusterDomain> */}}
{{- define "ketch.dnsSuffix" -}}
{{- printf "%s.%s.svc.%s" (include "ketch.headless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
KRaft's controller.quorum.voters: every combined node, or every dedicated controller.
id@<statefulset>-<ordinal>.<headless>.<namespace>.svc.<clusterDomain>:<client port>
*/}}
{{- define "ketch.voters" -}}
{{- $suffix := include "ketch.dnsSuffix" . }}
{{- $port := int .Values.ports.client }}
{{- $voters := list }}
{{- if .Values.controllers.dedicated }}
{{- $set := include "ketch.controllerName" . }}
{{- range $i := until (int .Values.controllers.replicas) }}
{{- $voters = append $voters (printf "%d@%s-%d.%s:%d" (add $.Values.controllers.nodeIdOffset $i 1 | int) $set $i $suffix $port) }}
{{- end }}
{{- else }}
{{- $set := include "ketch.fullname" . }}
{{- range $i := until (int .Values.replicas) }}
{{- $voters = append $voters (printf "%d@%s-%d.%s:%d" (add $i 1 | int) $set $i $suffix $port) }}
{{- end }}
{{- end }}
{{- join "," $voters }}
{{- end }}

{{- define "ketch.checkGrace" -}}
{{- $grace := float64 (default 10 .Values.config.shutdown_grace_s) }}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (addf $grace 5) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.shutdown_grace_s (%v) + 5 s of controlled shutdown" .Values.terminationGracePeriodSeconds $grace) }}
{{- end }}
{{- end }}
