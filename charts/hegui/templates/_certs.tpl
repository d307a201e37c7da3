{{/*
Self-signed bootstrap of the webhook's serving certificate (certManager.enabled=false).

At install Helm generates a CA and a serving certificate signed by it. On upgrade `lookup` finds
both Secrets and keeps them, unless one expires within bootstrapCerts.renewBeforeDays: then it is
renewed. Each Secret records its expiry (annotation hegui.io/expires-unix), since templates cannot
parse X.509. The caBundle is the CA, so renewing the serving certificate alone changes nothing
the apiserver checks; when the CA itself is renewed, the previous CA stays in the caBundle until
it expires, so pods still serving the old pair (the kubelet refreshes mounted Secrets within a
minute or two; the webhook then reloads the files without a restart) are trusted meanwhile.

Generated once per render and cached in .Values: the Secrets and both webhook configurations
must see the same certificates.
*/}}
{{- define "hegui.bootstrapCerts" -}}
{{- if not (hasKey .Values "heguiGeneratedCerts") -}}
{{- $ns := .Release.Namespace -}}
{{- $svc := include "hegui.webhook.fullname" . -}}
{{- $dns := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- $now := now | unixEpoch | int64 -}}
{{- $margin := mul .Values.bootstrapCerts.renewBeforeDays 86400 | int64 -}}
{{- $caSecret := lookup "v1" "Secret" $ns (include "hegui.webhook.caSecret" .) -}}
{{- $tlsSecret := lookup "v1" "Secret" $ns (include "hegui.webhook.tlsSecret" .) -}}
{{- $out := dict -}}
{{- $ca := dict -}}
{{- $caFresh := false -}}
{{- $caExpires := 0 | int64 -}}
{{- if and $caSecret $caSecret.data -}}
{{- $caExpires = (index ($caSecret.metadata.annotations | default dict) "hegui.io/expires-unix") | default "0" | int64 -}}
{{- end -}}
{{- if and $caSecret $caSecret.data (gt (sub $caExpires $now) $margin) -}}
{{- $ca = buildCustomCert (index $caSecret.data "tls.crt") (index $caSecret.data "tls.key") -}}
{{- $_ := set $out "caCrt" (index $caSecret.data "tls.crt" | b64dec) -}}
{{- $_ := set $out "caKey" (index $caSecret.data "tls.key" | b64dec) -}}
{{- $_ := set $out "caExpires" $caExpires -}}
{{- /* A previous CA kept for its remaining life. */ -}}
{{- $prevExpires := (index ($caSecret.metadata.annotations | default dict) "hegui.io/previous-expires-unix") | default "0" | int64 -}}
{{- if and (hasKey $caSecret.data "previous.crt") (gt $prevExpires $now) -}}
{{- $_ := set $out "previousCrt" (index $caSecret.data "previous.crt" | b64dec) -}}
{{- $_ := set $out "previousExpires" $prevExpires -}}
{{- end -}}
{{- else -}}
{{- $ca = genCA (printf "%s-ca" $svc) (int .Values.bootstrapCerts.caValidityDays) -}}
{{- $caFresh = true -}}
{{- $_ := set $out "caCrt" $ca.Cert -}}
{{- $_ := set $out "caKey" $ca.Key -}}
{{- $_ := set $out "caExpires" (add $now (mul .Values.bootstrapCerts.caValidityDays 86400)) -}}
{{- if and $caSecret $caSecret.data (gt $caExpires $now) -}}
{{- $_ := set $out "previousCrt" (index $caSecret.data "tls.crt" | b64dec) -}}
{{- $_ := set $out "previousExpires" $caExpires -}}
{{- end -}}
{{- end -}}
{{- $expires := 0 | int64 -}}
{{- if and $tlsSecret $tlsSecret.data -}}
{{- $expires = (index ($tlsSecret.metadata.annotations | default dict) "hegui.io/expires-unix") | default "0" | int64 -}}
{{- end -}}
{{- if and (not $caFresh) $tlsSecret $tlsSecret.data (gt (sub $expires $now) $margin) (eq (index $tlsSecret.data "ca.crt" | default "" | b64dec) $out.caCrt) -}}
{{- $_ := set $out "crt" (index $tlsSecret.data "tls.crt" | b64dec) -}}
{{- $_ := set $out "key" (index $tlsSecret.data "tls.key" | b64dec) -}}
{{- $_ := set $out "expires" $expires -}}
{{- else -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $dns (int .Values.bootstrapCerts.validityDays) $ca -}}
{{- $_ := set $out "crt" $cert.Cert -}}
{{- $_ := set $out "key" $cert.Key -}}
{{- $_ := set $out "expires" (add $now (mul .Values.bootstrapCerts.validityDays 86400)) -}}
{{- end -}}
{{- $_ := set $out "caBundle" (printf "%s%s" $out.caCrt ($out.previousCrt | default "") | b64enc) -}}
{{- $_ := set .Values "heguiGeneratedCerts" $out -}}
{{- end -}}
{{- toJson .Values.heguiGeneratedCerts -}}
{{- end -}}
