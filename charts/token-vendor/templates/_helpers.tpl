{{/*
Named templates of the token-vendor chart.

Public (for app charts that add the sidecar to their own pod spec; see README.md):
  token-vendor.sidecar             the long-running token-vendor container (a list item)
  token-vendor.volumes             the pod volumes: tokens (in-memory emptyDir), config, credentials
  token-vendor.appVolumeMounts     the read-only token mount for an app container (list items; with
                                   notify.signal also the notify volume, read-write, for its pid file)
  token-vendor.config              the token-vendor config YAML (the ConfigMap's config.yaml)
  token-vendor.initContainers      native: the sidecar; classic: the "once" init container
  token-vendor.containers          native: nothing; classic: the sidecar
  token-vendor.initContainer       classic: the "once" init container; native: nothing
  token-vendor.podSecurityContext  the pod securityContext: only fsGroup (the token files' group);
                                   the sidecar's uid is set on its own container
  (a token with notify.signal also needs shareProcessNamespace: true on the pod spec)

Each public template takes one argument, any of:
  .                                 inside this chart
  .                                 in a parent chart that has token-vendor as a dependency
                                    (values under .Values.token-vendor)
  (dict "root" . "subchart" "x")    in a parent chart that uses the alias "x" for it
  (dict "root" . "values" V)         values V given explicitly (set image.tag then)
*/}}

{{/*
token-vendor.resolve: fills the dict (second list element) with root, values and names
resolved from the argument (first list element). Prints nothing.
*/}}
{{- define "token-vendor.resolve" -}}
{{- $arg := index . 0 -}}
{{- $ctx := index . 1 -}}
{{- $root := $arg -}}
{{- $values := dict -}}
{{- if hasKey $arg "root" -}}
{{- $root = $arg.root -}}
{{- end -}}
{{- $subchart := "token-vendor" -}}
{{- if hasKey $arg "subchart" -}}
{{- $subchart = $arg.subchart -}}
{{- end -}}
{{- $self := false -}}
{{- if and (eq $root.Chart.Name "token-vendor") (hasKey $root.Values "token-vendor") -}}
{{- fail "the values are nested under token-vendor:, as a parent chart nests the values of its token-vendor dependency; this chart is installed on its own: take them out of token-vendor: (one level up)" -}}
{{- end -}}
{{- if and (hasKey $arg "root") (hasKey $arg "values") -}}
{{- $values = $arg.values -}}
{{- else if hasKey $root.Values $subchart -}}
{{- $values = index $root.Values $subchart -}}
{{- else -}}
{{- $values = $root.Values -}}
{{- $self = true -}}
{{- end -}}
{{- $name := default "token-vendor" $values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- $fullname := "" -}}
{{- if $values.fullnameOverride -}}
{{- $fullname = $values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains $name $root.Release.Name -}}
{{- $fullname = $root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $fullname = printf "%s-%s" $root.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- $_ := set $ctx "root" $root -}}
{{- $_ = set $ctx "self" $self -}}
{{- $_ = set $ctx "subchart" $subchart -}}
{{- $_ = set $ctx "values" $values -}}
{{- $_ = set $ctx "name" $name -}}
{{- $_ = set $ctx "fullname" $fullname -}}
{{- $_ = set $ctx "configMapName" (printf "%s-config" $fullname | trunc 63 | trimSuffix "-") -}}
{{- $secretName := $values.existingSecret -}}
{{- if not $secretName -}}
{{- $secretName = printf "%s-credentials" $fullname | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- $_ = set $ctx "secretName" $secretName -}}
{{- $listen := $values.config.listen | toString -}}
{{- $port := regexFind "[0-9]+$" $listen -}}
{{- if or (not $port) (not (regexMatch "^(\\[[0-9a-fA-F:.]*\\]|[0-9.]+|[A-Za-z0-9.-]*):[0-9]{1,5}$" $listen)) -}}
{{- fail (printf "config.listen %q is not HOST:PORT" $listen) -}}
{{- end -}}
{{- $_ = set $ctx "port" ($port | int) -}}
{{- end -}}

{{/* Chart name. */}}
{{- define "token-vendor.name" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $ctx.name -}}
{{- end -}}

{{/* Full name: "<release>-token-vendor" unless overridden. */}}
{{- define "token-vendor.fullname" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $ctx.fullname -}}
{{- end -}}

{{/* Name of the ConfigMap holding config.yaml. */}}
{{- define "token-vendor.configMapName" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $ctx.configMapName -}}
{{- end -}}

{{/* Name of the Secret holding the credentials (the chart's or existingSecret). */}}
{{- define "token-vendor.secretName" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $ctx.secretName -}}
{{- end -}}

{{/* Port of config.listen (probes, containerPort, metrics Service). */}}
{{- define "token-vendor.port" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $ctx.port -}}
{{- end -}}

{{/* Common labels (this chart's own resources). */}}
{{- define "token-vendor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "token-vendor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels. */}}
{{- define "token-vendor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "token-vendor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Image reference: repository[:tag][@digest]. */}}
{{- define "token-vendor.image" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $img := $ctx.values.image -}}
{{- $tag := $img.tag -}}
{{- if not $tag -}}
{{- if $ctx.self -}}
{{- $tag = $ctx.root.Chart.AppVersion -}}
{{- else -}}
{{- $sub := index (default (dict) $ctx.root.Subcharts) $ctx.subchart -}}
{{- if not $sub -}}
{{- fail (printf "token-vendor: no subchart %q to take the image tag from: set image.tag" $ctx.subchart) -}}
{{- end -}}
{{- $tag = $sub.Chart.AppVersion -}}
{{- end -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s:%s@%s" $img.repository $tag $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret volume holding one token's credentials. */}}
{{- define "token-vendor.credentialsVolumeName" -}}
{{- $n := printf "tv-cred-%s" . -}}
{{- if or (gt (len $n) 63) (hasSuffix "-" $n) -}}
{{- $n = printf "tv-cred-%s-%s" (trunc 45 . | trimSuffix "-") (sha256sum . | trunc 8) -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/* The group of the token files: the pod's fsGroup, else its first supplementalGroups entry. */}}
{{- define "token-vendor.filesGroup" -}}
{{- $psc := default (dict) . -}}
{{- if hasKey $psc "fsGroup" -}}
{{- $psc.fsGroup | int64 -}}
{{- else if $psc.supplementalGroups -}}
{{- first $psc.supplementalGroups | int64 -}}
{{- end -}}
{{- end -}}

{{/*
token-vendor.durationSeconds: a duration string in token-vendor's (humantime) syntax, in
seconds (a float), so that guards can apply the binary's lower bounds. The syntax itself is
checked by values.schema.json.
*/}}
{{- define "token-vendor.durationSeconds" -}}
{{- $units := dict "nanos" 1e-9 "nsec" 1e-9 "ns" 1e-9 "usec" 1e-6 "us" 1e-6 "µs" 1e-6 "millis" 1e-3 "msec" 1e-3 "ms" 1e-3 "seconds" 1.0 "second" 1.0 "secs" 1.0 "sec" 1.0 "s" 1.0 "minutes" 60.0 "minute" 60.0 "min" 60.0 "mins" 60.0 "m" 60.0 "hours" 3600.0 "hour" 3600.0 "hr" 3600.0 "hrs" 3600.0 "h" 3600.0 "days" 86400.0 "day" 86400.0 "d" 86400.0 "weeks" 604800.0 "week" 604800.0 "wk" 604800.0 "wks" 604800.0 "w" 604800.0 "months" 2630016.0 "month" 2630016.0 "M" 2630016.0 "years" 31557600.0 "year" 31557600.0 "yr" 31557600.0 "yrs" 31557600.0 "y" 31557600.0 -}}
{{- $total := 0.0 -}}
{{- range $m := regexFindAll "[0-9]+(\\.[0-9]+)?\\s*[a-zA-Zµ]+" (toString .) -1 -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $m | float64 -}}
{{- $unit := regexFind "[a-zA-Zµ]+$" $m -}}
{{- $total = addf $total (mulf $num (default 0.0 (index $units $unit))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/*
token-vendor.method: a token's auth_method (default client_secret_basic); for auto, the method the
configured credentials imply, as token-vendor check takes it: private_key (or private_key_key, with
existingSecret) -> private_key_jwt, client_assertion_file -> client_assertion_file, else the client
secret (client_secret_basic). At run time the discovery document picks among what they allow.
*/}}
{{- define "token-vendor.method" -}}
{{- $m := default "client_secret_basic" .auth_method | toString -}}
{{- if eq $m "auto" -}}
{{- if or (hasKey . "private_key") (hasKey . "private_key_key") -}}
{{- $m = "private_key_jwt" -}}
{{- else if hasKey . "client_assertion_file" -}}
{{- $m = "client_assertion_file" -}}
{{- else -}}
{{- $m = "client_secret_basic" -}}
{{- end -}}
{{- end -}}
{{- $m -}}
{{- end -}}

{{/* token-vendor.signalled: "true" when a token of the values (the argument) has notify.signal, else nothing. */}}
{{- define "token-vendor.signalled" -}}
{{- range $t := .tokens -}}
{{- if and (kindIs "map" $t.notify) (hasKey $t.notify "signal") -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/*
token-vendor.oldKeys: (dict "at" PATH "map" M) fails on a camelCase key of M: token settings are the
config file's snake_case keys (chart versions before 0.5.0 took camelCase); the message names the new key.
*/}}
{{- define "token-vendor.oldKeys" -}}
{{- range $k, $_ := .map -}}
{{- if regexMatch "[A-Z]" $k -}}
{{- fail (printf "%s.%s: token settings use the config file's snake_case keys since chart version 0.5.0: write %s" $.at $k (snakecase $k)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
token-vendor.snakeKeys: (dict "at" PREFIX "map" M) fails on a snake_case key of M: the chart's own settings
(everything but the entries of tokens) are camelCase.
*/}}
{{- define "token-vendor.snakeKeys" -}}
{{- range $k, $_ := .map -}}
{{- if contains "_" $k -}}
{{- fail (printf "%s%s: the chart's own settings are camelCase: write %s%s (only the entries of tokens use the config file's snake_case keys)" $.at $k $.at (camelcase $k | untitle)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
token-vendor.checkMode: (dict "at" WHAT "mode" M) fails, in a sentence, on a file mode token-vendor
check refuses: not a quoted octal string, readable by others, or not readable by its owner.
*/}}
{{- define "token-vendor.checkMode" -}}
{{- $m := .mode -}}
{{- if not (kindIs "string" $m) -}}
{{- fail (printf "%s is the number %v: YAML reads an unquoted 0640 as a number; quote the mode: \"0640\"" .at $m) -}}
{{- end -}}
{{- if not (regexMatch "^(0o)?0?[0-7]{3}$" $m) -}}
{{- fail (printf "%s %q is not a file mode: write three octal digits in quotes, such as \"0640\" or \"0600\"" .at $m) -}}
{{- end -}}
{{- $digits := regexFind "[0-7]{3}$" $m -}}
{{- if ne (substr 2 3 $digits) "0" -}}
{{- fail (printf "%s %q lets every other user read the token: use \"0640\" (the group is the pod's fsGroup, so the app reads it) or \"0600\"" .at $m) -}}
{{- end -}}
{{- if lt (substr 0 1 $digits | int) 4 -}}
{{- fail (printf "%s %q: the sidecar, the files' owner, must be able to read them: use \"0640\" or \"0600\"" .at $m) -}}
{{- end -}}
{{- end -}}

{{/*
token-vendor.validate: fails, with a sentence that says what to do, on what the chart manages
(the config: section, credentials for its Secret, mounts, outputs under the token's directory,
the pod's process namespace), on missing or placeholder token settings, and on keys in the wrong
case (old camelCase token keys, snake_case chart keys). The token settings themselves pass through:
values.schema.json holds their types (generated from the binary: tests/k8s/schema_agreement.py),
and the sidecar's own check judges the rest at start.
*/}}
{{- define "token-vendor.validate" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $v := $ctx.values -}}
{{- $in := "" -}}
{{- if not $ctx.self -}}
{{- $in = printf " under %s: in the parent chart's values" $ctx.subchart -}}
{{- else if not $ctx.root.Chart.IsRoot -}}
{{- $in = printf " under %s: in the parent chart's values" $ctx.root.Chart.Name -}}
{{- end -}}
{{- include "token-vendor.snakeKeys" (dict "at" "" "map" $v) -}}
{{- if kindIs "map" $v.config -}}
{{- include "token-vendor.snakeKeys" (dict "at" "config." "map" $v.config) -}}
{{- range $k := list "log" "refresh" "reload" -}}
{{- if kindIs "map" (index $v.config $k) -}}
{{- include "token-vendor.snakeKeys" (dict "at" (printf "config.%s." $k) "map" (index $v.config $k)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not (has (toString $v.sidecar.mode) (list "native" "classic")) -}}
{{- fail (printf "sidecar.mode %q is not a mode: set native (Kubernetes 1.29+: the sidecar is an init container with restartPolicy: Always, and a Job completes) or classic (older clusters: a \"token-vendor once\" init container plus a regular container)" (toString $v.sidecar.mode)) -}}
{{- end -}}
{{- include "token-vendor.checkMode" (dict "at" "outputMode" "mode" $v.outputMode) -}}
{{- if and (eq $v.sidecar.mode "native") (semverCompare "<1.29.0-0" $ctx.root.Capabilities.KubeVersion.Version) -}}
{{- fail (printf "sidecar.mode=native needs Kubernetes 1.29+ (native sidecars); this cluster is %s: set sidecar.mode=classic" $ctx.root.Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if not $v.tokens -}}
{{- fail (printf "token-vendor: no tokens are configured. Set tokens%s: each with a name, the token_url (or base_url, or issuer for discovery) of your identity provider, client_id and client_secret (or existingSecret) and outputs; see the chart's README.md" $in) -}}
{{- end -}}
{{- $c := $v.config -}}
{{- $w := $c.refresh.window -}}
{{- if gt (index $w 0 | float64) (index $w 1 | float64) -}}
{{- fail (printf "config.refresh.window %v is not a window: use two fractions 0 < low <= high < 1, such as [0.70, 0.85]" $w) -}}
{{- end -}}
{{- $minb := include "token-vendor.durationSeconds" $c.refresh.minBackoff | float64 -}}
{{- if lt $minb 0.01 -}}
{{- fail (printf "config.refresh.minBackoff %q must be at least 10ms, or retries would spin" $c.refresh.minBackoff) -}}
{{- end -}}
{{- if lt (include "token-vendor.durationSeconds" $c.refresh.maxBackoff | float64) $minb -}}
{{- fail (printf "config.refresh.maxBackoff %q must not be smaller than config.refresh.minBackoff %q" $c.refresh.maxBackoff $c.refresh.minBackoff) -}}
{{- end -}}
{{- if lt (include "token-vendor.durationSeconds" $c.reload.pollInterval | float64) 0.1 -}}
{{- fail (printf "config.reload.pollInterval %q must be at least 100ms" $c.reload.pollInterval) -}}
{{- end -}}
{{- if $v.serviceAccountToken.enabled -}}
{{- $cp := trimSuffix "/" $v.credentialsPath -}}
{{- if or (eq $cp "/var/run/secrets/token-vendor") (hasPrefix "/var/run/secrets/token-vendor/" $cp) (hasPrefix (printf "%s/" $cp) "/var/run/secrets/token-vendor") -}}
{{- fail (printf "credentialsPath %q overlaps /var/run/secrets/token-vendor, where serviceAccountToken mounts the projected token: use another directory, such as /var/run/secrets/token-vendor-credentials" $v.credentialsPath) -}}
{{- end -}}
{{- end -}}
{{- $seen := dict -}}
{{- $sa := "/var/run/secrets/token-vendor/token" -}}
{{- range $i, $t := $v.tokens -}}
{{- $at := printf "tokens[%d] (%s)" $i (toString $t.name) -}}
{{- include "token-vendor.oldKeys" (dict "at" (printf "tokens[%d]" $i) "map" $t) -}}
{{- range $k := list "http" "notify" -}}
{{- if kindIs "map" (index $t $k) -}}
{{- include "token-vendor.oldKeys" (dict "at" (printf "tokens[%d].%s" $i $k) "map" (index $t $k)) -}}
{{- end -}}
{{- end -}}
{{- if kindIs "map" $t.notify -}}
{{- range $k := list "http" "signal" -}}
{{- if kindIs "map" (index $t.notify $k) -}}
{{- include "token-vendor.oldKeys" (dict "at" (printf "tokens[%d].notify.%s" $i $k) "map" (index $t.notify $k)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $j, $o := $t.outputs -}}
{{- include "token-vendor.oldKeys" (dict "at" (printf "tokens[%d].outputs[%d]" $i $j) "map" $o) -}}
{{- if hasKey $o "file" -}}
{{- fail (printf "tokens[%d].outputs[%d].file was renamed to path (the config file's key; chart version 0.5.0): write path: %v, relative to the token's directory" $i $j $o.file) -}}
{{- end -}}
{{- if not $o.path -}}
{{- fail (printf "%s: outputs[%d] needs path: the file's name, relative to the token's directory (<tokenVolume.mountPath>/%s/)" $at $j (toString $t.name)) -}}
{{- end -}}
{{- if or (hasPrefix "/" (toString $o.path)) (regexMatch "(^|/)\\.\\.?(/|$)" (toString $o.path)) -}}
{{- fail (printf "%s: outputs[%d].path %q must stay in the token's directory: write a relative name such as token or token.json, without .. (the chart puts it under %s/%s/)" $at $j (toString $o.path) (trimSuffix "/" $v.tokenVolume.mountPath) (toString $t.name)) -}}
{{- end -}}
{{- range $k := list "uid" "gid" -}}
{{- if hasKey $o $k -}}
{{- fail (printf "%s: outputs[%d].%s is set by the chart (the files' group is podSecurityContext.fsGroup; the owner is the sidecar): remove it" $at $j $k) -}}
{{- end -}}
{{- end -}}
{{- with $o.mode -}}
{{- include "token-vendor.checkMode" (dict "at" (printf "%s: outputs[%d].mode" $at $j) "mode" .) -}}
{{- end -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" (toString $t.name)) -}}
{{- fail (printf "tokens[%d].name %q: use lowercase letters, digits and '-' (at most 63, not at either end): the name is a directory and part of volume names" $i (toString $t.name)) -}}
{{- end -}}
{{- if hasKey $seen $t.name -}}
{{- fail (printf "tokens[%d].name %q is used twice" $i $t.name) -}}
{{- end -}}
{{- $_ := set $seen $t.name true -}}
{{- range $k := list "client_id_file" "client_secret_file" "client_id_env" "client_secret_env" "private_key_file" "certificate_file" -}}
{{- if hasKey $t $k -}}
{{- fail (printf "%s: %s is set by the chart, which mounts the credentials from a Secret: set %s in the values (the chart writes it into its Secret), or existingSecret with %s_key" $at $k (regexReplaceAll "_(file|env)$" $k "") (regexReplaceAll "_(file|env)$" $k "")) -}}
{{- end -}}
{{- end -}}
{{- $endpoints := list -}}
{{- range $k := list "token_url" "base_url" "issuer" -}}
{{- if not (empty (index $t $k)) -}}
{{- $endpoints = append $endpoints $k -}}
{{- end -}}
{{- end -}}
{{- if ne (len $endpoints) 1 -}}
{{- fail (printf "%s: set exactly one of token_url, base_url and issuer (OIDC discovery finds the token endpoint from the issuer)%s" $at (ternary "" (printf "; found %s" (join ", " $endpoints)) (empty $endpoints))) -}}
{{- end -}}
{{- $urlKey := first $endpoints -}}
{{- $url := index $t $urlKey | toString -}}
{{- if regexMatch "^(?i)https?://idp\\.example\\.com([:/?#]|$)" $url -}}
{{- fail (printf "%s: %s %q is the chart's placeholder: set the %s of your identity provider%s" $at $urlKey $url (ternary "issuer URL" "token endpoint" (eq $urlKey "issuer")) $in) -}}
{{- end -}}
{{- /* $m: the method, or for auto the one its credentials imply (as the binary checks it). */ -}}
{{- $m := include "token-vendor.method" $t -}}
{{- $auto := eq (toString $t.auth_method) "auto" -}}
{{- $shown := ternary (printf "auto (as %s, from the credentials set)" $m) $m $auto -}}
{{- $secretMethod := has $m (list "client_secret_basic" "client_secret_basic_raw" "client_secret_post") -}}
{{- $exchange := eq (toString (default "client_credentials" $t.grant)) "token_exchange" -}}
{{- /* The credentials the chart puts into its Secret or mounts from existingSecret follow the method. */ -}}
{{- if not $secretMethod -}}
{{- range $k := list "client_secret" "client_secret_key" -}}
{{- if hasKey $t $k -}}
{{- fail (printf "%s: %s is not used by auth_method %s (no client secret is sent): remove it" $at $k $shown) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if ne $m "private_key_jwt" -}}
{{- range $k := list "private_key" "private_key_key" "certificate" "certificate_key" -}}
{{- if hasKey $t $k -}}
{{- fail (printf "%s: %s belongs to auth_method: private_key_jwt, not %s: remove it or set auth_method: private_key_jwt" $at $k $shown) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $v.existingSecret -}}
{{- range $k := list "client_id" "client_secret" "private_key" "certificate" -}}
{{- if hasKey $t $k -}}
{{- fail (printf "%s: %s is not used with existingSecret %q: remove it (the chart reads the Secret's keys: %s)" $at $k $v.existingSecret (include "token-vendor.secretKeysText" $t)) -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- if and $secretMethod (or (not $t.client_id) (not $t.client_secret)) -}}
{{- fail (printf "%s: client_id and client_secret are required unless existingSecret is set" $at) -}}
{{- end -}}
{{- if and (not $secretMethod) (ne $m "none") (not $t.client_id) -}}
{{- fail (printf "%s: client_id is required with auth_method %s unless existingSecret is set (no client_secret: the %s proves the client)" $at $shown (ternary "signed assertion" "client assertion" (eq $m "private_key_jwt"))) -}}
{{- end -}}
{{- if and (eq $m "private_key_jwt") (not $t.private_key) -}}
{{- fail (printf "%s: auth_method private_key_jwt needs private_key (a PKCS#8 PEM; --set-file tokens[%d].private_key=./key.pem), or existingSecret" $at $i) -}}
{{- end -}}
{{- range $k := list "client_id" "client_secret" -}}
{{- if and (hasKey $t $k) (eq (index $t $k | toString | upper) "CHANGE-ME") -}}
{{- fail (printf "%s: %s is still the placeholder CHANGE-ME: set the real value (e.g. --set-file tokens[%d].%s=./file) or use existingSecret" $at $k $i $k) -}}
{{- end -}}
{{- end -}}
{{- with $t.private_key -}}
{{- if regexMatch "-----BEGIN (RSA |EC |ENCRYPTED |OPENSSH )PRIVATE KEY-----" (toString .) -}}
{{- fail (printf "%s: private_key must be an unencrypted PKCS#8 PEM (-----BEGIN PRIVATE KEY-----); convert it with: openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.p8.pem" $at) -}}
{{- end -}}
{{- if not (regexMatch "-----BEGIN PRIVATE KEY-----" (toString .)) -}}
{{- fail (printf "%s: private_key is not a PEM private key (-----BEGIN PRIVATE KEY-----): set it from the file with --set-file tokens[%d].private_key=./key.pem" $at $i) -}}
{{- end -}}
{{- end -}}
{{- with $t.certificate -}}
{{- if not (regexMatch "-----BEGIN CERTIFICATE-----" (toString .)) -}}
{{- fail (printf "%s: certificate is not a PEM certificate (-----BEGIN CERTIFICATE-----): set it with --set-file tokens[%d].certificate=./cert.pem" $at $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $needsSaToken := or (and (eq $m "client_assertion_file") (eq (toString (default $sa $t.client_assertion_file)) $sa)) (and $exchange (eq (toString (default $sa $t.subject_token_file)) $sa)) -}}
{{- if and $needsSaToken (not $v.serviceAccountToken.enabled) -}}
{{- fail (printf "%s: %s reads the pod's projected service-account token at %s: set serviceAccountToken.enabled: true (and its audience), or %s to a file you mount" $at (ternary (printf "auth_method %s" $shown) "grant token_exchange" (eq $m "client_assertion_file")) $sa (ternary "client_assertion_file" "subject_token_file" (eq $m "client_assertion_file"))) -}}
{{- end -}}
{{- if and (kindIs "map" $t.notify) (hasKey $t.notify "signal") (not $v.shareProcessNamespace) -}}
{{- fail (printf "%s: notify.signal needs shareProcessNamespace: true: without a shared process namespace the sidecar cannot see the app's process (an app chart sets it on its own pod spec too)" $at) -}}
{{- end -}}
{{- end -}}
{{- $example := default (dict) $v.example -}}
{{- if and $example.enabled (include "token-vendor.signalled" $v) -}}
{{- $uid := (default (dict) $v.sidecar.securityContext).runAsUser -}}
{{- if ne (toString $example.runAsUser) (toString $uid) -}}
{{- fail (printf "example.runAsUser is %v, but notify.signal needs the app to run as the sidecar's uid %v (sidecar.securityContext.runAsUser): a sidecar without capabilities may signal only processes of its own uid" $example.runAsUser $uid) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
token-vendor.credentialItems: (list values token) -> JSON {"items": [{key, path}]}: the files of a
token's credentials Secret volume, by its auth_method. path is also the config key's stem
(client_id -> client_id_file). A public client (auth_method none) without client_id/client_id_key has none.
*/}}
{{- define "token-vendor.credentialItems" -}}
{{- $t := index . 1 -}}
{{- $m := include "token-vendor.method" $t -}}
{{- $items := list -}}
{{- if or (ne $m "none") $t.client_id $t.client_id_key -}}
{{- $items = append $items (dict "key" (default (printf "%s.client_id" $t.name) $t.client_id_key) "path" "client_id") -}}
{{- end -}}
{{- if has $m (list "client_secret_basic" "client_secret_basic_raw" "client_secret_post") -}}
{{- $items = append $items (dict "key" (default (printf "%s.client_secret" $t.name) $t.client_secret_key) "path" "client_secret") -}}
{{- end -}}
{{- if eq $m "private_key_jwt" -}}
{{- $items = append $items (dict "key" (default (printf "%s.private_key" $t.name) $t.private_key_key) "path" "private_key") -}}
{{- if or $t.certificate $t.certificate_key -}}
{{- $items = append $items (dict "key" (default (printf "%s.certificate" $t.name) $t.certificate_key) "path" "certificate") -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "items" $items) -}}
{{- end -}}

{{/* token-vendor.secretKeysText: a token's Secret keys, for messages. */}}
{{- define "token-vendor.secretKeysText" -}}
{{- $keys := list -}}
{{- range (include "token-vendor.credentialItems" (list dict .) | fromJson).items -}}
{{- $keys = append $keys .key -}}
{{- end -}}
{{- join ", " $keys | default "none" -}}
{{- end -}}

{{/*
token-vendor.config: the token-vendor config YAML. Credentials are referenced as files
mounted from the Secret, outputs go to the token volume with mode outputMode and the
pod's fsGroup as group.
*/}}
{{- define "token-vendor.config" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $v := $ctx.values -}}
{{- $c := $v.config -}}
listen: {{ $c.listen | toString | toJson }}
log:
  format: {{ $c.log.format | toJson }}
  level: {{ $c.log.level | toJson }}
refresh:
  window: {{ $c.refresh.window | toJson }}
  min_backoff: {{ $c.refresh.minBackoff | toJson }}
  max_backoff: {{ $c.refresh.maxBackoff | toJson }}
reload:
  poll_interval: {{ $c.reload.pollInterval | toJson }}
on_exit: {{ $c.onExit | toJson }}
{{- /* Warm-start state on the sidecar-only volume (stateVolume). The volume's root is the kubelet's 0777
directory, which token-vendor refuses to trust; it creates `tv` inside, 0700 and its own. */}}
state_dir: "/var/run/token-vendor/state/tv"
tokens:
{{- range $t := $v.tokens }}
{{- /* The token's settings pass through as the config file has them, except what the chart manages: the
credentials (in the Secret, mounted as files), the outputs (under the token's directory, the files' group)
and a signal hook's pid file (under the notify volume). */}}
{{- $out := omit $t "client_id" "client_secret" "client_id_key" "client_secret_key" "private_key" "private_key_key" "certificate" "certificate_key" "outputs" "notify" }}
{{- range (include "token-vendor.credentialItems" (list $v $t) | fromJson).items }}
{{- $_ := set $out (printf "%s_file" .path) (printf "%s/%s/%s" (trimSuffix "/" $v.credentialsPath) $t.name .path) }}
{{- end }}
{{- $_ := set $out "auth_method" (default "client_secret_basic" $t.auth_method) }}
{{- $m := include "token-vendor.method" $t }}
{{- if eq $m "client_assertion_file" }}
{{- $_ := set $out "client_assertion_file" (default "/var/run/secrets/token-vendor/token" $t.client_assertion_file) }}
{{- end }}
{{- if eq (toString $t.grant) "token_exchange" }}
{{- $_ := set $out "subject_token_file" (default "/var/run/secrets/token-vendor/token" $t.subject_token_file) }}
{{- end }}
{{- $outputs := list }}
{{- range $o := $t.outputs }}
{{- $file := dict "path" (printf "%s/%s/%s" (trimSuffix "/" $v.tokenVolume.mountPath) $t.name $o.path) "format" (default "raw" $o.format) "mode" (default $v.outputMode $o.mode | toString) }}
{{- with include "token-vendor.filesGroup" $v.podSecurityContext }}
{{- $_ := set $file "gid" (. | int64) }}
{{- end }}
{{- $outputs = append $outputs $file }}
{{- end }}
{{- $_ := set $out "outputs" $outputs }}
{{- with $t.notify }}
{{- $notify := deepCopy . }}
{{- if kindIs "map" .signal }}
{{- $_ := set $notify "signal" (merge (dict "pid_file" (printf "%s/%s" (trimSuffix "/" $v.notifyVolume.mountPath) .signal.pid_file) "signal" (default "SIGHUP" .signal.signal)) .signal) }}
{{- end }}
{{- $_ := set $out "notify" $notify }}
{{- end }}
  - name: {{ $t.name | toJson }}
    {{- toYaml (omit $out "name") | nindent 4 }}
{{- end }}
{{- end -}}

{{/* Volume mounts of the token-vendor containers. */}}
{{- define "token-vendor.sidecarVolumeMounts" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $v := $ctx.values -}}
- name: {{ $v.tokenVolume.name }}
  mountPath: {{ $v.tokenVolume.mountPath }}
- name: token-vendor-config
  mountPath: /etc/token-vendor
  readOnly: true
- name: {{ $v.stateVolume.name }}
  mountPath: /var/run/token-vendor/state
{{- if include "token-vendor.signalled" $v }}
- name: {{ $v.notifyVolume.name }}
  mountPath: {{ $v.notifyVolume.mountPath }}
  readOnly: true
{{- end }}
{{- if $v.serviceAccountToken.enabled }}
- name: token-vendor-sa-token
  mountPath: /var/run/secrets/token-vendor
  readOnly: true
{{- end }}
{{- range $t := $v.tokens }}
{{- if (include "token-vendor.credentialItems" (list $v $t) | fromJson).items }}
- name: {{ include "token-vendor.credentialsVolumeName" $t.name }}
  mountPath: {{ printf "%s/%s" (trimSuffix "/" $v.credentialsPath) $t.name }}
  readOnly: true
{{- end }}
{{- end }}
{{- with $v.sidecar.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Parts shared by every token-vendor container, after name/image/args/ports/probes. */}}
{{- define "token-vendor.containerCommon" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $v := $ctx.values -}}
{{- with $v.sidecar.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
resources:
  {{- toYaml $v.sidecar.resources | nindent 2 }}
securityContext:
  {{- toYaml $v.sidecar.securityContext | nindent 2 }}
volumeMounts:
  {{- include "token-vendor.sidecarVolumeMounts" . | nindent 2 }}
{{- end -}}

{{/*
token-vendor.sidecar: the long-running token-vendor container ("run"). In native mode it
carries restartPolicy: Always and a startupProbe on /readyz and belongs in initContainers;
in classic mode it belongs in containers.
*/}}
{{- define "token-vendor.sidecar" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $v := $ctx.values -}}
{{- $p := $v.sidecar.probes -}}
- name: {{ $v.sidecar.name }}
  image: {{ include "token-vendor.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args:
    - run
    - --config
    - /etc/token-vendor/config.yaml
    {{- range $v.sidecar.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- if eq $v.sidecar.mode "native" }}
  restartPolicy: Always
  {{- end }}
  ports:
    - name: admin
      containerPort: {{ $ctx.port }}
      protocol: TCP
  {{- if eq $v.sidecar.mode "native" }}
  startupProbe:
    httpGet:
      path: /readyz
      port: {{ $ctx.port }}
    periodSeconds: {{ $p.startup.periodSeconds }}
    timeoutSeconds: {{ $p.startup.timeoutSeconds }}
    failureThreshold: {{ $p.startup.failureThreshold }}
  {{- end }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ $ctx.port }}
    periodSeconds: {{ $p.readiness.periodSeconds }}
    timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
    failureThreshold: {{ $p.readiness.failureThreshold }}
    successThreshold: {{ $p.readiness.successThreshold }}
  livenessProbe:
    httpGet:
      path: /livez
      port: {{ $ctx.port }}
    initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
    periodSeconds: {{ $p.liveness.periodSeconds }}
    timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
    failureThreshold: {{ $p.liveness.failureThreshold }}
  {{- include "token-vendor.containerCommon" . | trim | nindent 2 }}
{{- end -}}

{{/*
token-vendor.initContainer: classic mode only, the init container that runs "once" so that
the token exists before the app starts. Renders nothing in native mode.
*/}}
{{- define "token-vendor.initContainer" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $v := $ctx.values -}}
{{- if eq $v.sidecar.mode "classic" -}}
- name: {{ printf "%s-init" $v.sidecar.name }}
  image: {{ include "token-vendor.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args:
    - once
    - --config
    - /etc/token-vendor/config.yaml
    - --timeout
    - {{ $v.sidecar.onceTimeout | quote }}
    {{- range $v.sidecar.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- include "token-vendor.containerCommon" . | trim | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* token-vendor.initContainers: what goes into the pod's initContainers in either mode. */}}
{{- define "token-vendor.initContainers" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- if eq $ctx.values.sidecar.mode "native" -}}
{{ include "token-vendor.sidecar" . }}
{{- else -}}
{{ include "token-vendor.initContainer" . }}
{{- end -}}
{{- end -}}

{{/* token-vendor.containers: what goes into the pod's containers in either mode. */}}
{{- define "token-vendor.containers" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- if eq $ctx.values.sidecar.mode "classic" -}}
{{ include "token-vendor.sidecar" . }}
{{- end -}}
{{- end -}}

{{/*
token-vendor.volumes: the pod volumes. The token volume is an in-memory emptyDir; each
token's credentials are a Secret volume of their own (files client_id, client_secret), so
that the kubelet's atomic ..data swap happens in the directory token-vendor watches. The
state volume and the projected service-account token (serviceAccountToken.enabled) are
mounted by the token-vendor containers only: token-vendor.appVolumeMounts never mounts them.
*/}}
{{- define "token-vendor.volumes" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- $v := $ctx.values -}}
- name: {{ $v.tokenVolume.name }}
  emptyDir:
    medium: Memory
    sizeLimit: {{ $v.tokenVolume.sizeLimit }}
- name: token-vendor-config
  configMap:
    name: {{ $ctx.configMapName }}
    defaultMode: 0444
- name: {{ $v.stateVolume.name }}
  emptyDir:
    medium: Memory
    sizeLimit: {{ $v.stateVolume.sizeLimit }}
{{- if include "token-vendor.signalled" $v }}
- name: {{ $v.notifyVolume.name }}
  emptyDir:
    medium: Memory
    sizeLimit: {{ $v.notifyVolume.sizeLimit }}
{{- end }}
{{- if $v.serviceAccountToken.enabled }}
- name: token-vendor-sa-token
  projected:
    {{- if hasKey $v.podSecurityContext "fsGroup" }}
    defaultMode: 0440
    {{- else }}
    defaultMode: 0444
    {{- end }}
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: {{ $v.serviceAccountToken.expirationSeconds | int64 }}
          {{- with $v.serviceAccountToken.audience }}
          audience: {{ . | quote }}
          {{- end }}
{{- end }}
{{- range $t := $v.tokens }}
{{- $items := (include "token-vendor.credentialItems" (list $v $t) | fromJson).items }}
{{- if $items }}
- name: {{ include "token-vendor.credentialsVolumeName" $t.name }}
  secret:
    secretName: {{ $ctx.secretName }}
    {{- if and $v.podSecurityContext (hasKey $v.podSecurityContext "fsGroup") }}
    defaultMode: 0440
    {{- else }}
    defaultMode: 0444
    {{- end }}
    items:
      {{- range $items }}
      - key: {{ .key }}
        path: {{ .path }}
      {{- end }}
{{- end }}
{{- end }}
{{- with $v.sidecar.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
token-vendor.appVolumeMounts: the app container's read-only mount of the tokens, and with a
notify.signal token the read-write mount of the notify volume, where the app writes its pid file.
*/}}
{{- define "token-vendor.appVolumeMounts" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
- name: {{ $ctx.values.tokenVolume.name }}
  mountPath: {{ $ctx.values.tokenVolume.mountPath }}
  readOnly: true
{{- if include "token-vendor.signalled" $ctx.values }}
- name: {{ $ctx.values.notifyVolume.name }}
  mountPath: {{ $ctx.values.notifyVolume.mountPath }}
{{- end }}
{{- end -}}

{{/*
token-vendor.podSecurityContext: the pod securityContext (a map, not a list). By default only
fsGroup: the group that lets the sidecar read its credentials and the app read the tokens.
It sets no runAsUser: the app keeps its own UID; the sidecar sets 65532 on its own container.
*/}}
{{- define "token-vendor.podSecurityContext" -}}
{{- $ctx := dict -}}
{{- $_ := include "token-vendor.resolve" (list . $ctx) -}}
{{- toYaml $ctx.values.podSecurityContext -}}
{{- end -}}
