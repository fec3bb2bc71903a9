{{/* Names and labels shared by every template of the chart. */}}

{{/* The release's base name: <release>, or <release>-openmodel unless the release name contains "openmodel". */}}
{{- define "openmodel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "openmodel" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-openmodel" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "openmodel.operator.fullname" -}}{{ include "openmodel.fullname" . }}-operator{{- end -}}
{{- define "openmodel.ledger.fullname" -}}{{ include "openmodel.fullname" . }}-ledger{{- end -}}
{{- define "openmodel.webhook.fullname" -}}{{ include "openmodel.fullname" . }}-webhook{{- end -}}

{{/* The ValidatingWebhookConfiguration is cluster-scoped: its name carries the namespace. */}}
{{- define "openmodel.webhook.configurationName" -}}
{{- printf "%s-%s" (include "openmodel.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Cluster-scoped RBAC objects carry the namespace too, so two releases never collide. */}}
{{- define "openmodel.clusterName" -}}
{{- printf "%s-%s" (include "openmodel.fullname" .) .Release.Namespace | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "openmodel.operator.serviceAccountName" -}}
{{- default (include "openmodel.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- define "openmodel.ledger.serviceAccountName" -}}
{{- default (include "openmodel.ledger.fullname" .) .Values.ledger.serviceAccount.name -}}
{{- end -}}

{{- define "openmodel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: openmodel
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: openmodel
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component (operator or ledger). */}}
{{- define "openmodel.selectorLabels" -}}
app.kubernetes.io/name: openmodel
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "openmodel.componentLabels" -}}
{{ include "openmodel.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* <registry>/<repository>:<tag>, tag defaulting to the chart's appVersion. */}}
{{- define "openmodel.image" -}}
{{- $registry := .context.Values.image.registry -}}
{{- $tag := default .context.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s%s@%s" (ternary "" (printf "%s/" $registry) (empty $registry)) .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s%s:%s" (ternary "" (printf "%s/" $registry) (empty $registry)) .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the ledger's signing key, and the key in it. */}}
{{- define "openmodel.ledger.keySecretName" -}}
{{- if .Values.ledger.signingKey.existingSecret -}}
{{- .Values.ledger.signingKey.existingSecret -}}
{{- else -}}
{{- include "openmodel.ledger.fullname" . }}-signing-key
{{- end -}}
{{- end -}}

{{/* The Secret with the ledger's TLS certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "openmodel.ledger.tlsSecretName" -}}
{{- if .Values.ledger.tls.existingSecret -}}
{{- .Values.ledger.tls.existingSecret -}}
{{- else -}}
{{- include "openmodel.ledger.fullname" . }}-tls
{{- end -}}
{{- end -}}

{{- define "openmodel.ledger.pvcName" -}}
{{- if .Values.ledger.persistence.existingClaim -}}
{{- .Values.ledger.persistence.existingClaim -}}
{{- else -}}
{{- include "openmodel.ledger.fullname" . }}-data
{{- end -}}
{{- end -}}

{{/* The ledger service's gRPC address as the operator dials it. */}}
{{- define "openmodel.ledger.url" -}}
https://{{ include "openmodel.ledger.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.ledger.service.grpcPort }}
{{- end -}}

{{/* The container securityContext every container gets (Pod Security "restricted"). */}}
{{- define "openmodel.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "openmodel.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Fails with a clear message on values the schema cannot catch. */}}
{{- define "openmodel.validate" -}}
{{- if and .Values.ledger.signingKey.existingSecret .Values.ledger.signingKey.privateKey -}}
{{- fail "ledger.signingKey: set either existingSecret or privateKey, not both" -}}
{{- end -}}
{{- end -}}

{{/* The ledger's origin (the note key's name). */}}
{{- define "openmodel.ledger.origin" -}}
{{- default (printf "%s.%s/%s" .Release.Namespace .Values.ledger.cluster (include "openmodel.ledger.fullname" .)) .Values.ledger.origin -}}
{{- end -}}

{{/*
A new Ed25519 signing key in the format of Go's golang.org/x/mod/sumdb/note
(what `openmodel ledger init` writes): PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>,
id = the first 4 bytes of SHA-256(<name> "\n" 0x01 <public key>), in hex.
Sprig generates the key (PKCS#8: 16 bytes of header, then the 32-byte seed)
but has no function for its public key; a throwaway self-signed certificate
of the key carries it (SubjectPublicKeyInfo: a fixed 12-byte header, then the
32 bytes), so it is taken from there.
*/}}
{{- define "openmodel.ledger.newSigningKey" -}}
{{- $name := include "openmodel.ledger.origin" . -}}
{{- $key := genPrivateKey "ed25519" -}}
{{- $cert := genSelfSignedCertWithKey "openmodel-ledger-key" nil nil 1 $key -}}
{{- $seed := substr 16 48 (b64dec (regexReplaceAll "-----[A-Z ]+-----|\\s" $key "")) -}}
{{- $der := b64dec (regexReplaceAll "-----[A-Z ]+-----|\\s" $cert.Cert "") -}}
{{- $spki := printf "%c%c%c%c%c%c%c%c%c%c%c%c" 0x30 0x2a 0x30 0x05 0x06 0x03 0x2b 0x65 0x70 0x03 0x21 0x00 -}}
{{- $pub := substr 0 32 (index (splitn $spki 2 $der) "_1") -}}
{{- if or (ne (len $seed) 32) (ne (len $pub) 32) -}}
{{- fail "ledger.signingKey: could not generate an Ed25519 key; create one with `openmodel ledger init` and set ledger.signingKey.existingSecret" -}}
{{- end -}}
{{- $id := substr 0 8 (sha256sum (printf "%s\n%c%s" $name 1 $pub)) -}}
{{- printf "PRIVATE+KEY+%s+%s+%s" $name $id (b64enc (printf "%c%s" 1 $seed)) -}}
{{- end -}}

{{/* NetworkPolicy egress: DNS and the API server. */}}
{{- define "openmodel.egressApiServerAndDns" -}}
# DNS.
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
# The API server (its addresses differ per cluster: networkPolicy.apiServerCIDRs).
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
