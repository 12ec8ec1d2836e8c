{{/*
One StatefulSet of Ketch nodes. Called with a dict:
  root: the chart context; name: StatefulSet name; component: broker | controller;
  replicas; roles: KETCH_ROLES; idOffset: node id = idOffset + ordinal + 1;
  resources; size: PVC size.
The node id and the advertised address are computed in the container from the pod name
(<name>-<ordinal>), since a StatefulSet gives every pod the same spec.
With tls.enabled every listener and every connection to another node is TLS (mutual TLS with
tls.clientAuth required) and the probes are exec probes of node/healthcheck.py, which speaks TLS
with the node's own certificate (Kubernetes' grpc probe cannot do TLS); the probe checks the
node's certificate against the pod's DNS name, as a peer would.
With externalAccess.enabled, brokers get two named listeners: INTERNAL (the pod DNS name, used by
the other nodes and in-cluster clients) and EXTERNAL (externalAccess.advertisedHosts[ordinal]).
Dedicated controllers keep the one listener: nothing outside the cluster dials them.
With ports.kafka > 0, brokers also serve Kafka's wire protocol (node/kafka/server.py) on that port,
advertised as the pod DNS name, for Kafka clients inside the cluster; not with tls.enabled (the
Kafka listener is plaintext).
*/}}
{{- define "ketch.statefulset" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- /* The rack matters to replica placement, so only brokers (not dedicated controllers) read it. */ -}}
{{- $rack := and $v.rack.fromNodeZone (ne .component "controller") -}}
{{- $external := and $v.externalAccess.enabled (ne .component "controller") -}}
{{- $internal := printf "${POD_NAME}.%s:%v" (include "ketch.dnsSuffix" $root) $v.ports.client -}}
{{- $kafka := and (gt (int $v.ports.kafka) 0) (ne .component "controller") (not $v.tls.enabled) -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ketch.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  serviceName: {{ include "ketch.headless" $root }}
  replicas: {{ .replicas }}
  # All pods start together: a Raft quorum needs its peers, not an order.
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
  selector:
    matchLabels:
      {{- include "ketch.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ .component }}
  template:
    metadata:
      labels:
        {{- include "ketch.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "ketch.fullname" $root }}
      # Only the rack init container talks to the Kubernetes API, through its own projected token.
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- if ne $v.podAntiAffinity "none" }}
      affinity:
        podAntiAffinity:
          {{- if eq $v.podAntiAffinity "hard" }}
          requiredDuringSchedulingIgnoredDuringExecution:
            - topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels:
                  {{- include "ketch.selectorLabels" $root | nindent 18 }}
                  app.kubernetes.io/component: {{ .component }}
          {{- else }}
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "ketch.selectorLabels" $root | nindent 20 }}
                    app.kubernetes.io/component: {{ .component }}
          {{- end }}
      {{- end }}
      {{- if $v.topologySpread.enabled }}
      topologySpreadConstraints:
        - maxSkew: {{ $v.topologySpread.maxSkew }}
          topologyKey: {{ $v.topologySpread.topologyKey }}
          whenUnsatisfiable: {{ $v.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "ketch.selectorLabels" $root | nindent 14 }}
              app.kubernetes.io/component: {{ .component }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $rack }}
      initContainers:
        - name: rack-from-node-zone
          image: {{ include "ketch.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: ["python", "-c", {{ $root.Files.Get "files/rack_from_node_zone.py" | quote }}]
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            - name: ZONE_LABEL
              value: {{ $v.rack.zoneLabel | quote }}
            - name: RACK_FILE
              value: /etc/ketch-rack/rack
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: rack
              mountPath: /etc/ketch-rack
            - name: kube-api-access
              mountPath: /var/run/secrets/kubernetes.io/serviceaccount
              readOnly: true
      {{- end }}
      containers:
        - name: ketch
          image: {{ include "ketch.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: ["/bin/sh", "-c"]
          args:
            - |
              set -e
              ordinal="${POD_NAME##*-}"
              export KETCH_NODE_ID="$((ordinal + {{ add .idOffset 1 }}))"
              {{- if $external }}
              case "$ordinal" in
                {{- range $i := until (int .replicas) }}
                {{ $i }}) external={{ include "ketch.externalAddress" (dict "root" $root "i" $i) | quote }} ;;
                {{- end }}
                *) echo "externalAccess.advertisedHosts has no entry for pod ${POD_NAME}: add one per pod" >&2; exit 1 ;;
              esac
              export KETCH_ADVERTISED_LISTENERS="INTERNAL://{{ $internal }},EXTERNAL://${external}"
              {{- else }}
              export KETCH_ADVERTISED_LISTENER="{{ $internal }}"
              {{- end }}
              {{- if $kafka }}
              export KETCH_KAFKA_ADVERTISED_LISTENER="${POD_NAME}.{{ include "ketch.dnsSuffix" $root }}:{{ $v.ports.kafka }}"
              {{- end }}
              if [ -s /etc/ketch-rack/rack ]; then export KETCH_RACK="$(cat /etc/ketch-rack/rack)"; fi
              exec ketch node
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: KETCH_ROLES
              value: {{ .roles | quote }}
            - name: KETCH_CLUSTER_ID
              value: {{ include "ketch.clusterId" $root | quote }}
            - name: KETCH_CONTROLLER_QUORUM_VOTERS
              value: {{ include "ketch.voters" $root | quote }}
            {{- if $external }}
            {{- $protocol := include "ketch.securityProtocol" $root }}
            - name: KETCH_LISTENERS
              value: "INTERNAL://0.0.0.0:{{ $v.ports.client }},EXTERNAL://0.0.0.0:{{ $v.externalAccess.port }}"
            - name: KETCH_LISTENER_SECURITY_PROTOCOL_MAP
              value: "INTERNAL:{{ $protocol }},EXTERNAL:{{ $protocol }}"
            - name: KETCH_INTER_BROKER_LISTENER_NAME
              value: INTERNAL
            - name: KETCH_CONTROLLER_LISTENER_NAMES
              value: INTERNAL
            {{- else }}
            - name: KETCH_LISTEN
              value: "0.0.0.0:{{ $v.ports.client }}"
            {{- end }}
            {{- if $v.tls.enabled }}
            - name: KETCH_SECURITY_PROTOCOL
              value: SSL
            - name: KETCH_SSL_CLIENT_AUTH
              value: {{ $v.tls.clientAuth | quote }}
            - name: KETCH_SSL_CAFILE
              value: {{ include "ketch.tlsDir" $root }}/ca.crt
            - name: KETCH_SSL_CERTFILE
              value: {{ include "ketch.tlsDir" $root }}/tls.crt
            - name: KETCH_SSL_KEYFILE
              value: {{ include "ketch.tlsDir" $root }}/tls.key
            {{- end }}
            {{- if $kafka }}
            - name: KETCH_KAFKA_LISTEN
              value: "0.0.0.0:{{ $v.ports.kafka }}"
            {{- end }}
            - name: KETCH_DATA_DIR
              value: /var/lib/ketch
            - name: KETCH_METRICS_HOST
              value: "0.0.0.0"
            - name: KETCH_METRICS_PORT
              value: {{ $v.ports.metrics | quote }}
            {{- range $key, $value := $v.config }}
            - name: {{ printf "KETCH_%s" (upper $key) }}
              value: {{ $value | toString | quote }}
            {{- end }}
          ports:
            - name: client
              containerPort: {{ $v.ports.client }}
            - name: metrics
              containerPort: {{ $v.ports.metrics }}
            {{- if $external }}
            - name: external
              containerPort: {{ $v.externalAccess.port }}
            {{- end }}
            {{- if $kafka }}
            - name: kafka
              containerPort: {{ $v.ports.kafka }}
            {{- end }}
          # The node's grpc.health.v1 service: SERVING once the node serves, NOT_SERVING while it shuts down.
          {{- range $probe := list "startup" "readiness" "liveness" }}
          {{ $probe }}Probe:
            {{- if $v.tls.enabled }}
            exec:
              command:
                - /bin/sh
                - -c
                - KETCH_ADVERTISED_LISTENER="{{ $internal }}" exec python -m node.healthcheck 127.0.0.1:{{ $v.ports.client }} --timeout {{ $v.probes.execTimeoutSeconds }}
            timeoutSeconds: {{ add $v.probes.execTimeoutSeconds 2 }}
            {{- else }}
            grpc:
              port: {{ $v.ports.client }}
            {{- end }}
            periodSeconds: {{ (get $v.probes $probe).periodSeconds }}
            failureThreshold: {{ (get $v.probes $probe).failureThreshold }}
          {{- end }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /var/lib/ketch
            - name: tmp
              mountPath: /tmp
            {{- if $rack }}
            - name: rack
              mountPath: /etc/ketch-rack
              readOnly: true
            {{- end }}
            {{- if $v.tls.enabled }}
            - name: tls
              mountPath: {{ include "ketch.tlsDir" $root }}
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- if $v.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ include "ketch.tlsSecretName" $root }}
            # 0440: root and the pod's fsGroup (the node's group) may read the key.
            defaultMode: 288
        {{- end }}
        {{- if $rack }}
        - name: rack
          emptyDir: {}
        - name: kube-api-access
          projected:
            sources:
              - serviceAccountToken:
                  path: token
                  expirationSeconds: 3600
              - configMap:
                  name: kube-root-ca.crt
                  items:
                    - key: ca.crt
                      path: ca.crt
        {{- end }}
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "ketch.selectorLabels" $root | nindent 10 }}
          app.kubernetes.io/component: {{ .component }}
      spec:
        accessModes:
          {{- toYaml $v.persistence.accessModes | nindent 10 }}
        {{- with $v.persistence.storageClass }}
        storageClassName: {{ . | quote }}
        {{- end }}
        resources:
          requests:
            storage: {{ .size }}
{{- end }}
