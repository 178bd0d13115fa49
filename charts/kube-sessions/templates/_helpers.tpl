{{/* Names and labels shared by every object of the chart. */}}
{{- define "kube-sessions.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kube-sessions.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kube-sessions.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kube-sessions.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kube-sessions
{{- end -}}

{{- define "kube-sessions.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-sessions.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kube-sessions.image" -}}
{{- printf "%s:%s" .Values.image.repository (required "image.tag is required: the kube-sessions release to run" .Values.image.tag) -}}
{{- end -}}

{{/* Restricted Pod Security Standard, for the operator and the gateway. */}}
{{- define "kube-sessions.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kube-sessions.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The namespaces served: the list, or the empty list for all. */}}
{{- define "kube-sessions.namespaceArgs" -}}
{{- range .Values.watchNamespaces }}
- --namespace
- {{ . | quote }}
{{- end }}
{{- end -}}

{{- /* The session-token key (templates/tokenkey.yaml) as the operator's and gateway's env. */ -}}
{{- define "kube-sessions.tokenKeyEnv" -}}
- name: KUBESESSIONS_TOKEN_KEY
  valueFrom: {secretKeyRef: {name: {{ include "kube-sessions.fullname" . }}-token-key, key: key}}
{{- end }}

{{/* The state store's settings (docs/suspend.md), each optional: no Secret, no suspend. */}}
{{- define "kube-sessions.stateStoreEnv" -}}
{{- $secret := .Values.stateStore.existingSecret -}}
{{- range $key := list "ENDPOINT" "BUCKET" "REGION" "ACCESS_KEY_ID" "SECRET_ACCESS_KEY" }}
- name: KUBESESSIONS_STATE_STORE_{{ $key }}
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ $key }}, optional: true}}
{{- end }}
{{- end }}
