{{/* Names, labels and the image, shared by every template. */}}

{{- define "hegui.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hegui.fullname" -}}
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

{{- define "hegui.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "hegui.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hegui
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "webhook") */}}
{{- define "hegui.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hegui.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hegui.componentLabels" -}}
{{ include "hegui.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hegui.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "hegui.webhook.fullname" -}}{{ include "hegui.fullname" . | trunc 55 | trimSuffix "-" }}-webhook{{- end -}}
{{- define "hegui.operator.fullname" -}}{{ include "hegui.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end -}}

{{- define "hegui.webhook.serviceAccountName" -}}
{{- default (include "hegui.webhook.fullname" .) .Values.webhook.serviceAccount.name -}}
{{- end -}}
{{- define "hegui.operator.serviceAccountName" -}}
{{- default (include "hegui.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{/* The Secret with the webhook's serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "hegui.webhook.tlsSecret" -}}{{ include "hegui.webhook.fullname" . }}-tls{{- end -}}
{{- define "hegui.webhook.caSecret" -}}{{ include "hegui.webhook.fullname" . }}-ca{{- end -}}

{{/*
The restricted Pod Security Standard, for both components: non-root (65532, as in the images),
read-only root filesystem, no capabilities, no privilege escalation, RuntimeDefault seccomp.
*/}}
{{- define "hegui.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "hegui.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Egress both components need: DNS and the Kubernetes API. */}}
{{- define "hegui.egressBase" -}}
# DNS, to resolve the apiserver's name.
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
# The Kubernetes API (list/watch; the operator's writes).
- ports:
    {{- range .Values.networkPolicy.apiServerPorts }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with .Values.networkPolicy.apiServerCIDRs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* Triton with hegui's moderation models: its Deployment, its Service and the address
sidecars dial (<service>.<namespace>.svc:8001, gRPC). */}}
{{- define "hegui.triton.fullname" -}}{{ include "hegui.fullname" . | trunc 56 | trimSuffix "-" }}-triton{{- end -}}
{{- define "hegui.triton.serviceName" -}}{{ .Values.triton.serviceName }}{{- end -}}
{{- define "hegui.triton.address" -}}{{ include "hegui.triton.serviceName" . }}.{{ .Release.Namespace }}.svc:8001{{- end -}}
{{- define "hegui.triton.image" -}}
{{- $tag := default .Chart.AppVersion .Values.triton.image.tag -}}
{{- if .Values.triton.image.digest -}}
{{- printf "%s:%s@%s" .Values.triton.image.repository $tag .Values.triton.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.triton.image.repository $tag -}}
{{- end -}}
{{- end -}}
