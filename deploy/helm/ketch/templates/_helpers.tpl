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

{{/*
TLS: the Secret every pod mounts (cert-manager's layout: ca.crt, tls.crt, tls.key), as a directory
at ketch.tlsDir, never with subPath: the kubelet swaps the whole directory when the Secret changes
and the node reloads the files itself on its next handshake (node/server_tls.py).
*/}}
{{- define "ketch.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "ketch.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{- define "ketch.tlsDir" -}}
/etc/ketch/tls
{{- end }}

{{/* The security protocol of every listener: SSL with tls.enabled, else PLAINTEXT. */}}
{{- define "ketch.securityProtocol" -}}
{{- ternary "SSL" "PLAINTEXT" .Values.tls.enabled }}
{{- end }}

{{/*
The names the one StatefulSet certificate carries: every pod of both StatefulSets through the
wildcard *.<headless>.<ns>.svc.<domain>, the client Service under each of its names, and with
externalAccess the advertised host names (IP addresses go to ketch.certificateIPs).
*/}}
{{- define "ketch.certificateDNSNames" -}}
{{- $full := include "ketch.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list (printf "*.%s" (include "ketch.dnsSuffix" .)) $full (printf "%s.%s" $full $ns) (printf "%s.%s.svc" $full $ns) (printf "%s.%s.svc.%s" $full $ns .Values.clusterDomain) }}
{{- if .Values.externalAccess.enabled }}
{{- range .Values.externalAccess.advertisedHosts }}
{{- if not (include "ketch.isIP" .) }}{{ $names = append $names . }}{{ end }}
{{- end }}
{{- end }}
{{- range .Values.tls.certManager.extraDnsNames }}{{ $names = append $names . }}{{ end }}
{{- toJson (uniq $names) }}
{{- end }}

{{- define "ketch.certificateIPs" -}}
{{- $ips := list }}
{{- if .Values.externalAccess.enabled }}
{{- range .Values.externalAccess.advertisedHosts }}
{{- if include "ketch.isIP" . }}{{ $ips = append $ips . }}{{ end }}
{{- end }}
{{- end }}
{{- toJson (uniq $ips) }}
{{- end }}

{{- define "ketch.isIP" -}}
{{- if or (regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$" .) (contains ":" .) }}true{{ end }}
{{- end }}

{{/*
External access: pod i of the broker StatefulSet is reached from outside at
advertisedHosts[i]:<port>, the port being externalAccess.port through a LoadBalancer Service or
externalAccess.service.nodePorts[i] through a NodePort one. Returns "host:port" for ordinal .i.
*/}}
{{- define "ketch.externalAddress" -}}
{{- $e := .root.Values.externalAccess }}
{{- $port := $e.port }}
{{- if eq $e.service.type "NodePort" }}{{ $port = index $e.service.nodePorts .i }}{{ end }}
{{- $host := index $e.advertisedHosts .i }}
{{- printf "%s:%v" (ternary (printf "[%s]" $host) $host (contains ":" $host)) $port }}
{{- end }}

{{- define "ketch.checkValues" -}}
{{- $v := .Values }}
{{- if and $v.tls.enabled $v.tls.certManager.enabled (not $v.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name: the cert-manager Issuer or ClusterIssuer that signs the nodes' certificate" }}
{{- end }}
{{- if $v.externalAccess.enabled }}
{{- $e := $v.externalAccess }}
{{- $n := int $v.replicas }}
{{- if lt (len $e.advertisedHosts) $n }}
{{- fail (printf "externalAccess.advertisedHosts needs one host per broker pod: %d pods (%s-0..%d), %d given. Entry i is the host name or IP address clients outside the cluster reach pod i at (its LoadBalancer address, or the address of a Kubernetes node for NodePort)" $n (include "ketch.fullname" .) (sub $n 1) (len $e.advertisedHosts)) }}
{{- end }}
{{- if and (eq $e.service.type "NodePort") (lt (len $e.service.nodePorts) $n) }}
{{- fail (printf "externalAccess.service.type NodePort needs externalAccess.service.nodePorts, one per broker pod: %d pods, %d given (the port each pod's Service opens on every Kubernetes node, 30000-32767, advertised to clients)" $n (len $e.service.nodePorts)) }}
{{- end }}
{{- end }}
{{- end }}
