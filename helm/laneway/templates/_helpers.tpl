{{/*
Name helpers, labels, the image reference, and the webhook certificate.

Kubernetes object names and label values may be at most 63 characters. `laneway.fullname` is
truncated to 63; `laneway.suffixed` shortens the fullname further so that "<fullname>-<suffix>"
still fits, which keeps every derived name (webhook Service, TLS Secret, metrics Service) valid for
the longest release name Helm accepts.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "laneway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The base name of every object: fullnameOverride, else the release name when it already contains
the chart name, else "<release>-<chart>".
*/}}
{{- define "laneway.fullname" -}}
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

{{/*
"<fullname>-<suffix>" in at most 63 characters; call as
  include "laneway.suffixed" (list . "webhook")
*/}}
{{- define "laneway.suffixed" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $room := sub 62 (len $suffix) | int -}}
{{- printf "%s-%s" (include "laneway.fullname" $root | trunc $room | trimSuffix "-") $suffix -}}
{{- end -}}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "laneway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator's pods; they never change between upgrades. */}}
{{- define "laneway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "laneway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels on every object the chart creates. */}}
{{- define "laneway.labels" -}}
helm.sh/chart: {{ include "laneway.chart" . }}
app.kubernetes.io/name: {{ include "laneway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: laneway
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "laneway.serviceAccountName" -}}
{{- default (include "laneway.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The kopf peering object's name; the operator reads it from LANEWAY_PEERING_NAME. */}}
{{- define "laneway.peeringName" -}}
{{- include "laneway.fullname" . -}}
{{- end -}}

{{/* The webhook's Service; the certificate's DNS names are derived from it. */}}
{{- define "laneway.webhookServiceName" -}}
{{- include "laneway.suffixed" (list . "webhook") -}}
{{- end -}}

{{/* The Secret with the webhook's serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "laneway.webhookSecretName" -}}
{{- include "laneway.suffixed" (list . "webhook-tls") -}}
{{- end -}}

{{/* The operator image: repository, then @digest when set, else :tag (default appVersion). */}}
{{- define "laneway.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The image the webhook injects as the router sidecar: sidecar.image, else the operator's. */}}
{{- define "laneway.sidecarImage" -}}
{{- default (include "laneway.image" .) .Values.sidecar.image -}}
{{- end -}}

{{/* "true" when the operator watches the whole cluster rather than a list of namespaces. */}}
{{- define "laneway.clusterWide" -}}
{{- if not .Values.operator.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* The DNS names the API server may use to reach the webhook Service. */}}
{{- define "laneway.webhookDNSNames" -}}
{{- $svc := include "laneway.webhookServiceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns)
      (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}

{{/*
The webhook certificate as YAML {ca, crt, key}, each base64-encoded PEM. The Secret from an
earlier install is reused when it holds all three parts, so upgrades do not rotate the
certificate; otherwise a new CA and a serving certificate for the Service's DNS names are
generated. Render this once per release (webhook.yaml does) because each call without an existing
Secret generates a different certificate.
*/}}
{{- define "laneway.webhookCert" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "laneway.webhookSecretName" .) -}}
{{- $data := dig "data" (dict) $existing -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
ca: {{ index $data "ca.crt" }}
crt: {{ index $data "tls.crt" }}
key: {{ index $data "tls.key" }}
{{- else -}}
{{- $days := int .Values.webhook.certValidityDays -}}
{{- $svc := include "laneway.webhookServiceName" . -}}
{{- $ca := genCA (printf "%s-ca" $svc) $days -}}
{{- $dns := include "laneway.webhookDNSNames" . | fromJsonArray -}}
{{- $cn := printf "%s.%s.svc" $svc .Release.Namespace -}}
{{- $cert := genSignedCert $cn nil $dns $days $ca -}}
ca: {{ $ca.Cert | b64enc }}
crt: {{ $cert.Cert | b64enc }}
key: {{ $cert.Key | b64enc }}
{{- end -}}
{{- end -}}

{{/*
The RBAC rules the operator needs inside each namespace it watches. Used by the ClusterRole when
the operator watches the whole cluster, and by one Role per namespace when
operator.watchNamespaces is set. Why each rule exists: docs/install.md, "RBAC".
*/}}
{{- define "laneway.namespacedRules" -}}
- apiGroups: [routing.laneway.dev]
  resources: [modellanes, routingpolicies]
  verbs: [get, list, watch, patch, update]
- apiGroups: [routing.laneway.dev]
  resources: [modellanes/status, routingpolicies/status]
  verbs: [get, patch, update]
- apiGroups: [routing.laneway.dev]
  resources: [modellanes/finalizers, routingpolicies/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end -}}
