{{/* The pod spec shared by the server and the scheduler: (list $ component args). */}}
{{- define "runs-fleet.podSpec" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $args := index . 2 -}}
{{- $v := $root.Values -}}
serviceAccountName: {{ include "runs-fleet.serviceAccountName" $root }}
automountServiceAccountToken: {{ eq $v.mode "k8s" }}
enableServiceLinks: false
terminationGracePeriodSeconds: {{ $v.orchestrator.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml $v.orchestrator.podSecurityContext | nindent 2 }}
{{- with $v.orchestrator.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with $v.orchestrator.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.orchestrator.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.orchestrator.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.orchestrator.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.orchestrator.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $v.orchestrator.topologySpreadConstraints | nindent 2 }}
{{- else }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "runs-fleet.selectorLabels" (list $root $component) | nindent 8 }}
{{- end }}
containers:
  - name: {{ $component }}
    image: {{ include "runs-fleet.image" $root | quote }}
    imagePullPolicy: {{ $v.orchestrator.image.pullPolicy }}
    command: ["runs-fleet"]
    args:
      {{- toYaml $args | nindent 6 }}
    envFrom:
      - configMapRef:
          name: {{ include "runs-fleet.fullname" $root }}
    env:
      {{- include "runs-fleet.secretEnv" $root | nindent 6 }}
      {{- with $v.orchestrator.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- if eq $component "server" }}
    ports:
      - name: http
        containerPort: 8080
        protocol: TCP
    startupProbe:
      httpGet:
        path: /health
        port: http
      periodSeconds: 2
      failureThreshold: 30
    livenessProbe:
      httpGet:
        path: /health
        port: http
      periodSeconds: 10
      timeoutSeconds: 3
      failureThreshold: 3
    readinessProbe:
      httpGet:
        path: /ready
        port: http
      periodSeconds: 5
      timeoutSeconds: 3
      failureThreshold: 2
    resources:
      {{- toYaml $v.orchestrator.resources | nindent 6 }}
    {{- else }}
    resources:
      {{- toYaml $v.scheduler.resources | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml $v.orchestrator.securityContext | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      - name: secrets
        mountPath: {{ include "runs-fleet.secretsDir" $root }}
        readOnly: true
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 256Mi
  {{- include "runs-fleet.secretVolume" $root | nindent 2 }}
{{- end }}
