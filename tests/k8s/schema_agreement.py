#!/usr/bin/env python3
"""The chart and `token-vendor check` agree on every value in TABLE (scripts/validate-k8s).

  schema_agreement.py CHART_DIR BINARY WORKDIR     (VERBOSE=1: each side's reason for a refusal;
                                                   ONLY=REGEX: only the rows whose id matches, said in the summary)

For each row, the chart's values are tests/k8s/tokens-values.yaml with the row's changes:
  chart  `helm template` with values.schema.json and the template guards: accepted or refused;
  check  the real `token-vendor check` on the config the chart renders for the base values,
         with the same value at the config key it maps to (a refused value has no rendering):
         accepted or refused;
  and, when the chart accepts, `token-vendor check` on the config the chart actually rendered
  (credential files hold the rendered Secret's values): it must accept too. This is the class
  of bug the table exists for: a value the schema lets through and the sidecar refuses (exit 2).

The chart and check must agree. The only exception is a row with `known`: the chart refuses
a value the binary accepts (never the other way round), for the reason given; such a row
passes when both agree as well, and says so. Every row also states the chart's expected
verdict, so a change on both sides at once is noticed.

Why a table and not a schema generated from the Rust types: the refusals that matter (a
world-readable mode, http:// to a non-loopback host, a duration below a bound, a reserved
form parameter) live in the validation code, not in the serde types: the raw `mode` is a
String, so a schema generated from the types would accept "0644" as the old one did. The
values also differ in shape (camelCase, `file` under the token's directory, credentials in
a Secret, gid from the pod's fsGroup). The table holds the schema, the guards in
_helpers.tpl and the binary to one behaviour.
"""
import copy
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import k8s_checks as kc  # noqa: E402

DELETE = object()
TOKEN_ROOT = "/var/run/tokens"


def row(rid, changes, expect, known=None, cfg=None, group=None):
    """changes: [(values path, value)]; expect: 'ok' or 'refused' (the chart's verdict);
    cfg: explicit config changes [(config path, value)] where the mapping is not 1:1;
    group: (values changes, config changes) of a method or grant switch, applied before changes
    (whose own mapping is still automatic)."""
    pre_values, pre_cfg = group or ([], [])
    return {"id": rid, "changes": list(pre_values) + changes, "expect": expect, "known": known, "cfg": cfg,
            "pre_cfg": list(pre_cfg), "skip": len(pre_values)}



CRED = "/var/run/secrets/token-vendor-credentials/example"
SA = "/var/run/secrets/token-vendor/token"
SA_ON = ("serviceAccountToken", {"enabled": True, "audience": "api://AzureADTokenExchange", "expirationSeconds": 3600})
# Sentinels replaced by throwaway PEMs at run time (materialize): PEM:<ec256|ec384|rsa>:<key|cert|pkcs1>.
JWT = ([("tokens.0.authMethod", "private_key_jwt"), ("tokens.0.clientSecret", DELETE),
        ("tokens.0.privateKey", "PEM:ec256:key")],
       [("tokens.0.auth_method", "private_key_jwt"), ("tokens.0.client_secret_file", DELETE),
        ("tokens.0.private_key_file", f"{CRED}/private_key")])
ASSERTION = ([SA_ON, ("tokens.0.authMethod", "client_assertion_file"), ("tokens.0.clientSecret", DELETE)],
             [("tokens.0.auth_method", "client_assertion_file"), ("tokens.0.client_secret_file", DELETE),
              ("tokens.0.client_assertion_file", SA)])
EXCHANGE = ([SA_ON, ("tokens.0.grant", "token_exchange"), ("tokens.0.authMethod", "none"),
             ("tokens.0.clientId", DELETE), ("tokens.0.clientSecret", DELETE)],
            [("tokens.0.grant", "token_exchange"), ("tokens.0.subject_token_file", SA),
             ("tokens.0.auth_method", "none"), ("tokens.0.client_id_file", DELETE),
             ("tokens.0.client_secret_file", DELETE)])

NOTIFY = "/var/run/token-vendor-notify"
N = "tokens.0.notify"


def notify_row(rid, notify, expect, cfg_notify="same", shared=False, known=None, extra=()):
    """A row that sets tokens[0].notify (with shareProcessNamespace when `shared`, and the `extra` values
    changes, which have no config key); cfg_notify: the config's notify block ("same": as in the values)."""
    changes = ([("shareProcessNamespace", True)] if shared else []) + list(extra) + [(N, notify)]
    return row(rid, changes, expect, known=known, cfg=[(N, notify if cfg_notify == "same" else cfg_notify)])


def signal_cfg(pid_file="app.pid", signal="SIGHUP"):
    return {"signal": {"pid_file": f"{NOTIFY}/{pid_file}", "signal": signal}}


M = "tokens.0.outputs.0.mode"
U = "tokens.0.tokenUrl"
I = "tokens.0.issuer"
ISS = "https://login.acme.test/realms/apps"
TABLE = [
    # File modes: the binary wants an owner-readable mode with no bits for others.
    row("mode 0640", [(M, "0640")], "ok"),
    row("mode 0600", [(M, "0600")], "ok"),
    row("mode 0440", [(M, "0440")], "ok"),
    row("mode 0644 (world-readable)", [(M, "0644")], "refused"),
    row("mode 0604", [(M, "0604")], "refused"),
    row("mode 0777", [(M, "0777")], "refused"),
    row("mode \"640\" (no leading 0)", [(M, "640")], "ok"),
    row("mode 640 (a YAML number)", [(M, 640)], "refused"),
    row("mode \"0o640\"", [(M, "0o640")], "ok"),
    row("mode 0200 (owner cannot read)", [(M, "0200")], "refused"),
    row("mode 1640 (sticky)", [(M, "1640")], "refused"),
    row("mode \"\"", [(M, "")], "refused"),
    row("outputMode 0644", [("outputMode", "0644")], "refused"),
    row("outputMode 0600", [("outputMode", "0600")], "ok"),
    # Token names.
    row("name a", [("tokens.0.name", "a")], "ok"),
    row("name of 63 characters", [("tokens.0.name", "x" * 63)], "ok"),
    row("name of 64 characters", [("tokens.0.name", "x" * 64)], "refused"),
    row("name with a capital", [("tokens.0.name", "Api")], "refused"),
    row("name starting with -", [("tokens.0.name", "-api")], "refused"),
    row("name ending with -", [("tokens.0.name", "api-")], "ok"),
    row("name with _", [("tokens.0.name", "a_b")], "refused"),
    row("name twice", [("tokens.1", "COPY0")], "refused"),
    # URLs.
    row("tokenUrl https with port and query", [(U, "https://idp.corp:8443/oauth2/token?x=1")], "ok"),
    row("tokenUrl upper-case scheme", [(U, "HTTPS://idp.corp/t")], "ok"),
    row("tokenUrl http to a remote host", [(U, "http://idp.corp/t")], "refused"),
    row("tokenUrl http to localhost", [(U, "http://localhost:8080/t")], "ok"),
    row("tokenUrl http to 127.0.0.1", [(U, "http://127.0.0.1:9000/t")], "ok"),
    row("tokenUrl http to [::1]", [(U, "http://[::1]/t")], "ok"),
    row("tokenUrl http with allowInsecureHttp", [(U, "http://idp.corp/t"), ("tokens.0.http", {"allowInsecureHttp": True})], "ok"),
    row("tokenUrl ftp", [(U, "ftp://idp.corp/t")], "refused"),
    row("tokenUrl with user info", [(U, "https://user:pw@idp.corp/t")], "refused"),
    row("tokenUrl port 99999", [(U, "https://idp.corp:99999/t")], "refused"),
    row("tokenUrl not a URL", [(U, "not-a-url")], "refused"),
    row("tokenUrl without host", [(U, "https://")], "refused"),
    row("tokenUrl bad IPv4", [(U, "https://1.2.3.4.5/t")], "refused"),
    row("tokenUrl with a space", [(U, "https://idp.corp/a b")], "refused",
        known="the binary percent-encodes a space in the path; the chart refuses it as a typo"),
    row("tokenUrl http://127.1 (short loopback form)", [(U, "http://127.1/t")], "refused",
        known="the chart knows only the usual loopback spellings (localhost, 127.x.x.x, [::1])"),
    row("baseUrl https with a path", [(U, DELETE), ("tokens.0.baseUrl", "https://tenant.benchling.com/anything")], "ok"),
    row("baseUrl http to a remote host", [(U, DELETE), ("tokens.0.baseUrl", "http://tenant.corp")], "refused"),
    row("tokenUrl and baseUrl both", [("tokens.0.baseUrl", "https://tenant.benchling.com")], "refused",
        known="the binary silently takes token_url; the chart asks for exactly one (reported to the lead)"),
    row("no tokenUrl nor baseUrl", [(U, DELETE)], "refused"),
    # OIDC discovery: issuer instead of tokenUrl/baseUrl; authMethod auto and assertionAudience issuer need it.
    row("issuer + clientSecret + authMethod auto", [(U, DELETE), (I, ISS), ("tokens.0.authMethod", "auto")], "ok"),
    row("issuer + clientSecret, client_secret_post", [(U, DELETE), (I, ISS), ("tokens.0.authMethod", "client_secret_post")], "ok"),
    row("issuer without a path", [(U, DELETE), (I, "https://login.acme.test")], "ok"),
    row("issuer with a trailing /", [(U, DELETE), (I, ISS + "/")], "ok"),
    row("issuer with a port and a deep path", [(U, DELETE), (I, "https://login.acme.test:8443/tenant/a/v2.0")], "ok"),
    row("issuer http to 127.0.0.1", [(U, DELETE), (I, "http://127.0.0.1:8080/realms/apps")], "ok"),
    row("issuer http to localhost", [(U, DELETE), (I, "http://localhost/realms/apps")], "ok"),
    row("issuer + privateKey + assertionAudience issuer",
        [(U, DELETE), (I, ISS), ("tokens.0.assertionAudience", "issuer")], "ok", group=JWT),
    row("issuer + privateKey + authMethod auto + assertionAudience issuer",
        [(U, DELETE), (I, ISS), ("tokens.0.authMethod", "auto"), ("tokens.0.assertionAudience", "issuer")], "ok", group=JWT),
    row("issuer + clientAssertionFile + authMethod auto",
        [(U, DELETE), (I, ISS), ("tokens.0.authMethod", "auto"), ("tokens.0.clientAssertionFile", SA)], "ok", group=ASSERTION,
        cfg=ASSERTION[1][1:] + [("tokens.0.auth_method", "auto"), ("tokens.0.token_url", DELETE), ("tokens.0.issuer", ISS)]),
    row("issuer with tokenUrl", [(I, ISS)], "refused"),
    row("issuer with baseUrl", [(U, DELETE), (I, ISS), ("tokens.0.baseUrl", "https://tenant.benchling.com")], "refused"),
    row("authMethod auto without issuer", [("tokens.0.authMethod", "auto")], "refused"),
    row("authMethod auto without issuer (privateKey)", [("tokens.0.authMethod", "auto")], "refused", group=JWT),
    row("issuer http to a remote host", [(U, DELETE), (I, "http://login.acme.test/realms/apps")], "refused"),
    row("issuer http to a remote host with allowInsecureHttp",
        [(U, DELETE), (I, "http://login.acme.test/realms/apps"), ("tokens.0.http", {"allowInsecureHttp": True})], "refused"),
    row("issuer with a query", [(U, DELETE), (I, ISS + "?tenant=1")], "refused"),
    row("issuer with an empty query", [(U, DELETE), (I, ISS + "?")], "refused"),
    row("issuer with a fragment", [(U, DELETE), (I, ISS + "#x")], "refused"),
    row("issuer with user info", [(U, DELETE), (I, "https://u:p@login.acme.test/realms/apps")], "refused"),
    row("issuer not a URL", [(U, DELETE), (I, "login.acme.test/realms/apps")], "refused"),
    row("issuer ftp", [(U, DELETE), (I, "ftp://login.acme.test/realms/apps")], "refused"),
    row("issuer empty", [(U, DELETE), (I, "")], "refused"),
    row("issuer the chart's placeholder host", [(U, DELETE), (I, "https://idp.example.com/realms/apps")], "refused",
        known="chart rule: the placeholder of values.yaml's commented example is refused, as a tokenUrl is"),
    row("authMethod auto + privateKey + clientSecret",
        [(U, DELETE), (I, ISS), ("tokens.0.authMethod", "auto"), ("tokens.0.clientSecret", "s")], "refused", group=JWT,
        cfg=JWT[1][:1] + JWT[1][2:] + [("tokens.0.auth_method", "auto"), ("tokens.0.token_url", DELETE), ("tokens.0.issuer", ISS)]),
    row("authMethod auto + clientSecret + alg", [(U, DELETE), (I, ISS), ("tokens.0.authMethod", "auto"), ("tokens.0.alg", "ES256")],
        "refused"),
    row("authMethod auto + clientAssertionFile without serviceAccountToken",
        [(U, DELETE), (I, ISS), ("tokens.0.authMethod", "auto"), ("tokens.0.clientAssertionFile", SA),
         ("serviceAccountToken", {"enabled": False, "audience": "", "expirationSeconds": 3600})], "refused", group=ASSERTION,
        cfg=ASSERTION[1][1:] + [("tokens.0.auth_method", "auto"), ("tokens.0.token_url", DELETE), ("tokens.0.issuer", ISS)]),
    # Client authentication.
    row("authMethod client_secret_basic", [("tokens.0.authMethod", "client_secret_basic")], "ok"),
    row("authMethod client_secret_basic_raw", [("tokens.0.authMethod", "client_secret_basic_raw")], "ok"),
    row("authMethod client_secret_post", [("tokens.0.authMethod", "client_secret_post")], "ok"),
    row("authMethod in capitals", [("tokens.0.authMethod", "Client_Secret_Basic")], "refused"),
    row("authMethod client_secret_jwt (unknown)", [("tokens.0.authMethod", "client_secret_jwt")], "refused"),
    row("client_secret_basic_raw with ':' in the client id",
        [("tokens.0.authMethod", "client_secret_basic_raw"), ("tokens.0.clientId", "a:b")], "refused",
        known="issue 11 makes this a config error in the binary (another helper's change)"),
    row("clientSecret with + / % : & =", [("tokens.0.clientSecret", "s3cr3t+/%:&=")], "ok"),
    row("clientSecret of one newline", [("tokens.0.clientSecret", "\n")], "refused"),
    row("clientId empty", [("tokens.0.clientId", "")], "refused"),
    # private_key_jwt: the key (and certificate) from the Secret, alg, kid, assertion audience and lifetime.
    row("private_key_jwt ES256", [("tokens.0.alg", "ES256")], "ok", group=JWT),
    row("private_key_jwt without alg (EC key: ES256)", [], "ok", group=JWT),
    row("private_key_jwt RS256 (RSA key)", [("tokens.0.privateKey", "PEM:rsa:key"), ("tokens.0.alg", "RS256")], "ok", group=JWT),
    row("private_key_jwt PS256 (RSA key)", [("tokens.0.privateKey", "PEM:rsa:key"), ("tokens.0.alg", "PS256")], "ok", group=JWT),
    row("private_key_jwt ES384 (P-384 key)", [("tokens.0.privateKey", "PEM:ec384:key"), ("tokens.0.alg", "ES384")], "ok", group=JWT),
    row("alg HS256 (unknown)", [("tokens.0.alg", "HS256")], "refused", group=JWT),
    row("alg es256 (lower case)", [("tokens.0.alg", "es256")], "refused", group=JWT),
    row("kid", [("tokens.0.kid", "key-1")], "ok", group=JWT),
    row("kid empty", [("tokens.0.kid", "")], "refused", group=JWT),
    row("kid blank", [("tokens.0.kid", "  ")], "refused", group=JWT),
    row("certificate (x5t#S256)", [("tokens.0.certificate", "PEM:ec256:cert")], "ok", group=JWT),
    row("certificate not a PEM", [("tokens.0.certificate", "abc")], "refused", group=JWT),
    row("kid and certificate", [("tokens.0.kid", "key-1"), ("tokens.0.certificate", "PEM:ec256:cert")], "refused", group=JWT),
    row("assertionAudience token_endpoint", [("tokens.0.assertionAudience", "token_endpoint")], "ok", group=JWT),
    row("assertionAudience a URL", [("tokens.0.assertionAudience", "https://login.acme.test/realms/r")], "ok", group=JWT),
    row("assertionAudience issuer without issuer", [("tokens.0.assertionAudience", "issuer")], "refused", group=JWT),
    row("assertionAudience not a URL", [("tokens.0.assertionAudience", "acme")], "refused", group=JWT),
    row("assertionLifetime 1s", [("tokens.0.assertionLifetime", "1s")], "ok", group=JWT),
    row("assertionLifetime 1h", [("tokens.0.assertionLifetime", "1h")], "ok", group=JWT),
    row("assertionLifetime 500ms", [("tokens.0.assertionLifetime", "500ms")], "refused", group=JWT),
    row("assertionLifetime 3601s", [("tokens.0.assertionLifetime", "3601s")], "refused", group=JWT),
    row("assertionLifetime 60 (no unit)", [("tokens.0.assertionLifetime", 60)], "refused", group=JWT),
    row("privateKey PKCS#1 (BEGIN RSA PRIVATE KEY)", [("tokens.0.privateKey", "PEM:rsa:pkcs1")], "refused", group=JWT),
    row("privateKey not a PEM", [("tokens.0.privateKey", "CHANGE-ME")], "refused", group=JWT),
    row("private_key_jwt without privateKey", [("tokens.0.privateKey", DELETE)], "refused", group=JWT,
        cfg=JWT[1][:2] + [("tokens.0.private_key_file", DELETE)]),
    row("private_key_jwt with clientSecret", [("tokens.0.clientSecret", "s")], "refused", group=JWT,
        cfg=JWT[1][:1] + JWT[1][2:]),
    row("private_key_jwt without clientId", [("tokens.0.clientId", DELETE)], "refused", group=JWT,
        cfg=JWT[1] + [("tokens.0.client_id_file", DELETE)]),
    row("alg with client_secret_basic", [("tokens.0.alg", "ES256")], "refused"),
    row("privateKey with client_secret_basic", [("tokens.0.privateKey", "PEM:ec256:key")], "refused"),
    row("assertionLifetime with client_secret_post",
        [("tokens.0.authMethod", "client_secret_post"), ("tokens.0.assertionLifetime", "60s")], "refused"),
    # client_assertion_file: the projected service-account token as the client assertion.
    row("client_assertion_file (projected token)", [], "ok", group=ASSERTION),
    row("client_assertion_file with its own file", [("tokens.0.clientAssertionFile", "/etc/assertion/token")], "ok",
        group=ASSERTION, cfg=ASSERTION[1][:2] + [("tokens.0.client_assertion_file", "/etc/assertion/token")]),
    row("client_assertion_file without serviceAccountToken", [("serviceAccountToken", {"enabled": False, "audience": "", "expirationSeconds": 3600})],
        "refused", group=ASSERTION),
    row("client_assertion_file with clientSecret", [("tokens.0.clientSecret", "s")], "refused", group=ASSERTION,
        cfg=ASSERTION[1][:1] + ASSERTION[1][2:]),
    row("client_assertion_file with alg", [("tokens.0.alg", "RS256")], "refused", group=ASSERTION),
    row("client_assertion_file without clientId", [("tokens.0.clientId", DELETE)], "refused", group=ASSERTION,
        cfg=ASSERTION[1] + [("tokens.0.client_id_file", DELETE)]),
    row("clientAssertionFile with client_secret_basic", [("tokens.0.clientAssertionFile", "/etc/assertion/token")], "refused"),
    row("clientAssertionFile relative", [("tokens.0.clientAssertionFile", "assertion")], "refused", group=ASSERTION,
        known="chart rule: a mounted file has an absolute path; the binary resolves it against the config's directory"),
    # grant token_exchange (RFC 8693): GCP STS style public client, and with client authentication.
    row("token_exchange, public client (GCP STS)",
        [("tokens.0.audience", "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x"),
         ("tokens.0.requestedTokenType", "urn:ietf:params:oauth:token-type:access_token"),
         ("tokens.0.scope", "https://www.googleapis.com/auth/cloud-platform")], "ok", group=EXCHANGE),
    row("subjectTokenType jwt URI", [("tokens.0.subjectTokenType", "urn:ietf:params:oauth:token-type:jwt")], "ok", group=EXCHANGE),
    row("subjectTokenType id_token URI", [("tokens.0.subjectTokenType", "urn:ietf:params:oauth:token-type:id_token")], "ok", group=EXCHANGE),
    row("subjectTokenType jwt (not a URI)", [("tokens.0.subjectTokenType", "jwt")], "refused", group=EXCHANGE),
    row("requestedTokenType access_token (not a URI)", [("tokens.0.requestedTokenType", "access_token")], "refused", group=EXCHANGE),
    row("requestedTokenType with a space", [("tokens.0.requestedTokenType", "urn:a b")], "refused", group=EXCHANGE),
    row("subjectTokenFile of your own", [("tokens.0.subjectTokenFile", "/etc/subject/token")], "ok", group=EXCHANGE,
        cfg=EXCHANGE[1][:1] + EXCHANGE[1][2:] + [("tokens.0.subject_token_file", "/etc/subject/token")]),
    row("token_exchange with clientId (public)", [("tokens.0.clientId", "gcp-client")], "ok", group=EXCHANGE,
        cfg=EXCHANGE[1][:3] + EXCHANGE[1][4:]),
    row("token_exchange with client_secret_basic",
        [SA_ON, ("tokens.0.grant", "token_exchange")], "ok",
        cfg=[("tokens.0.grant", "token_exchange"), ("tokens.0.subject_token_file", SA)]),
    row("token_exchange with client_assertion_file", [("tokens.0.grant", "token_exchange")], "ok", group=ASSERTION,
        cfg=ASSERTION[1] + [("tokens.0.grant", "token_exchange"), ("tokens.0.subject_token_file", SA)]),
    row("token_exchange with private_key_jwt", [SA_ON, ("tokens.0.grant", "token_exchange")], "ok", group=JWT,
        cfg=JWT[1] + [("tokens.0.grant", "token_exchange"), ("tokens.0.subject_token_file", SA)]),
    row("token_exchange without serviceAccountToken",
        [("serviceAccountToken", {"enabled": False, "audience": "", "expirationSeconds": 3600})], "refused", group=EXCHANGE,
        known="check does not open subject_token_file (reported to the lead); the chart knows the projected token is absent"),
    row("authMethod none with clientSecret", [("tokens.0.clientSecret", "s")], "refused", group=EXCHANGE,
        cfg=EXCHANGE[1][:4]),
    row("params subject_token with token_exchange", [("tokens.0.params", {"subject_token": "x"})], "refused", group=EXCHANGE),
    row("subjectTokenType without the grant", [("tokens.0.subjectTokenType", "urn:ietf:params:oauth:token-type:jwt")], "refused"),
    row("subjectTokenFile without the grant", [("tokens.0.subjectTokenFile", "/etc/subject/token")], "refused"),
    row("requestedTokenType without the grant",
        [("tokens.0.requestedTokenType", "urn:ietf:params:oauth:token-type:access_token")], "refused"),
    row("grant password (unknown)", [("tokens.0.grant", "password")], "refused"),
    row("grant client_credentials", [("tokens.0.grant", "client_credentials")], "ok"),
    # Request parameters.
    row("scope with spaces", [("tokens.0.scope", "orders:read orders:write")], "ok"),
    row("scope a number", [("tokens.0.scope", 5)], "refused"),
    row("audience", [("tokens.0.audience", "https://api.corp")], "ok"),
    row("resource a string", [("tokens.0.resource", "https://api.corp")], "ok"),
    row("resource a list", [("tokens.0.resource", ["https://a.corp", "https://b.corp"])], "ok"),
    row("resource an empty list", [("tokens.0.resource", [])], "ok"),
    row("resource a number", [("tokens.0.resource", 5)], "refused"),
    row("resource [\"\"]", [("tokens.0.resource", [""])], "refused",
        known="the binary sends an empty resource=; RFC 8707 wants an absolute URI"),
    row("params", [("tokens.0.params", {"tenant": "acme"})], "ok"),
    row("params grant_type (reserved)", [("tokens.0.params", {"grant_type": "password"})], "refused"),
    row("params scope (reserved)", [("tokens.0.params", {"scope": "x"})], "refused"),
    row("params value a number", [("tokens.0.params", {"n": 1})], "refused"),
    # Durations.
    row("defaultLifetime 1h", [("tokens.0.defaultLifetime", "1h")], "ok"),
    row("defaultLifetime 1.5h", [("tokens.0.defaultLifetime", "1.5h")], "ok"),
    row("defaultLifetime 1h 30m", [("tokens.0.defaultLifetime", "1h 30m")], "ok"),
    row("defaultLifetime 90 seconds", [("tokens.0.defaultLifetime", "90 seconds")], "ok"),
    row("defaultLifetime 2s (the minimum)", [("tokens.0.defaultLifetime", "2s")], "ok"),
    row("defaultLifetime 2000ms", [("tokens.0.defaultLifetime", "2000ms")], "ok"),
    row("defaultLifetime 1999ms", [("tokens.0.defaultLifetime", "1999ms")], "refused"),
    row("defaultLifetime 1s", [("tokens.0.defaultLifetime", "1s")], "refused"),
    row("defaultLifetime \"30\" (no unit)", [("tokens.0.defaultLifetime", "30")], "refused"),
    row("defaultLifetime 30 (a number)", [("tokens.0.defaultLifetime", 30)], "refused"),
    row("defaultLifetime 1x (unknown unit)", [("tokens.0.defaultLifetime", "1x")], "refused"),
    row("http.timeout 15s", [("tokens.0.http", {"timeout": "15s"})], "ok"),
    row("http.timeout 0s", [("tokens.0.http", {"timeout": "0s"})], "refused"),
    row("http.connectTimeout 0ms", [("tokens.0.http", {"connectTimeout": "0ms"})], "refused"),
    row("http.connectTimeout 500ms", [("tokens.0.http", {"connectTimeout": "500ms"})], "ok"),
    # TLS files.
    row("http.clientCertFile and clientKeyFile",
        [("tokens.0.http", {"clientCertFile": "/etc/tv-tls/tls.crt", "clientKeyFile": "/etc/tv-tls/tls.key"})], "ok"),
    row("http.clientCertFile without clientKeyFile", [("tokens.0.http", {"clientCertFile": "/etc/tv-tls/tls.crt"})], "refused"),
    row("http.caFile", [("tokens.0.http", {"caFile": "/etc/tv-tls/ca.crt"})], "ok"),
    row("http.caFile relative", [("tokens.0.http", {"caFile": "tv-tls/ca.crt"})], "refused"),
    row("http.allowInsecureHttp \"true\" (a string)", [("tokens.0.http", {"allowInsecureHttp": "true"})], "refused"),
    # Outputs.
    row("format raw", [("tokens.0.outputs.0.format", "raw")], "ok"),
    row("format header", [("tokens.0.outputs.0.format", "header")], "ok"),
    row("format env", [("tokens.0.outputs.0.format", "env")], "ok"),
    row("format omitted (raw)", [("tokens.0.outputs.0.format", DELETE)], "ok"),
    row("format yaml", [("tokens.0.outputs.0.format", "yaml")], "refused"),
    row("format RAW", [("tokens.0.outputs.0.format", "RAW")], "refused"),
    row("file in a subdirectory", [("tokens.0.outputs.0.file", "sub/token")], "ok"),
    row("file twice", [("tokens.0.outputs.1.file", "token")], "refused"),
    row("file ../escape", [("tokens.0.outputs.0.file", "../escape")], "refused",
        known="chart layout rule: a token's files stay in its own directory; the binary takes any path"),
    row("no outputs", [("tokens.0.outputs", [])], "refused"),
    # uid/gid: the files' group is the pod's fsGroup.
    row("fsGroup 65532", [("podSecurityContext.fsGroup", 65532)], "ok"),
    row("fsGroup 0", [("podSecurityContext.fsGroup", 0)], "ok"),
    row("fsGroup 2147483647", [("podSecurityContext.fsGroup", 2147483647)], "ok"),
    row("fsGroup -1", [("podSecurityContext.fsGroup", -1)], "refused"),
    row("fsGroup 4294967296", [("podSecurityContext.fsGroup", 4294967296)], "refused"),
    row("fsGroup 3000000000", [("podSecurityContext.fsGroup", 3000000000)], "refused",
        known="Kubernetes refuses IDs above 2147483647; the binary takes any u32"),
    row("supplementalGroups without fsGroup",
        [("podSecurityContext", {"supplementalGroups": [1000]})], "ok",
        cfg=[("tokens.*.outputs.*.gid", 1000)]),
    # notify: a POST to the app on loopback, or a signal to the pid in a pid file on the notify volume.
    notify_row("notify http to 127.0.0.1", {"http": {"url": "http://127.0.0.1:8080/-/token-changed"}}, "ok"),
    notify_row("notify http to localhost", {"http": {"url": "http://localhost:9000/"}}, "ok"),
    notify_row("notify http to LOCALHOST", {"http": {"url": "http://LOCALHOST:9000/"}}, "ok"),
    notify_row("notify http to [::1]", {"http": {"url": "http://[::1]:9000/reload?token=x"}}, "ok"),
    notify_row("notify http timeout 500ms", {"http": {"url": "http://127.0.0.1:1/", "timeout": "500ms"}}, "ok"),
    notify_row("notify http timeout 1m", {"http": {"url": "http://127.0.0.1:1/", "timeout": "1m"}}, "ok"),
    notify_row("notify http timeout 0s", {"http": {"url": "http://127.0.0.1:1/", "timeout": "0s"}}, "refused"),
    notify_row("notify http timeout 61s", {"http": {"url": "http://127.0.0.1:1/", "timeout": "61s"}}, "refused"),
    notify_row("notify http timeout 5 (no unit)", {"http": {"url": "http://127.0.0.1:1/", "timeout": 5}}, "refused"),
    notify_row("notify http to a remote host", {"http": {"url": "http://app.default.svc:8080/"}}, "refused"),
    notify_row("notify http to a pod IP", {"http": {"url": "http://10.1.2.3:8080/"}}, "refused"),
    notify_row("notify http to 0.0.0.0", {"http": {"url": "http://0.0.0.0:8080/"}}, "refused"),
    notify_row("notify https to 127.0.0.1", {"http": {"url": "https://127.0.0.1:8443/"}}, "refused"),
    notify_row("notify http with user info", {"http": {"url": "http://u:p@127.0.0.1:8080/"}}, "refused"),
    notify_row("notify http to 127.999.0.1", {"http": {"url": "http://127.999.0.1/"}}, "refused"),
    notify_row("notify http without url", {"http": {"timeout": "1s"}}, "refused"),
    notify_row("notify http with method (unknown key)", {"http": {"url": "http://127.0.0.1:1/", "method": "PUT"}},
               "refused"),
    notify_row("notify http to http://127.1 (short loopback form)", {"http": {"url": "http://127.1/"}}, "refused",
               known="the chart knows only the usual loopback spellings (localhost, 127.x.x.x, [::1])"),
    notify_row("notify empty", {}, "refused"),
    notify_row("notify command (unknown key)", {"command": "reload.sh"}, "refused"),
    notify_row("notify http and signal", {"http": {"url": "http://127.0.0.1:1/"}, "signal": {"pidFile": "app.pid"}},
               "refused", shared=True,
               cfg_notify={"http": {"url": "http://127.0.0.1:1/"}, **signal_cfg()}),
    notify_row("notify signal (SIGHUP by default)", {"signal": {"pidFile": "app.pid"}}, "ok", shared=True,
               cfg_notify=signal_cfg()),
    notify_row("notify signal SIGUSR1", {"signal": {"pidFile": "app.pid", "signal": "SIGUSR1"}}, "ok", shared=True,
               cfg_notify=signal_cfg(signal="SIGUSR1")),
    notify_row("notify signal USR2 (no SIG)", {"signal": {"pidFile": "app.pid", "signal": "USR2"}}, "ok", shared=True,
               cfg_notify=signal_cfg(signal="USR2")),
    notify_row("notify signal SIGTERM", {"signal": {"pidFile": "app.pid", "signal": "SIGTERM"}}, "ok", shared=True,
               cfg_notify=signal_cfg(signal="SIGTERM")),
    notify_row("notify signal pid file in a subdirectory", {"signal": {"pidFile": "run/app.pid"}}, "ok", shared=True,
               cfg_notify=signal_cfg("run/app.pid")),
    notify_row("notify signal SIGKILL", {"signal": {"pidFile": "app.pid", "signal": "SIGKILL"}}, "refused",
               shared=True, cfg_notify=signal_cfg(signal="SIGKILL")),
    notify_row("notify signal sighup (lower case)", {"signal": {"pidFile": "app.pid", "signal": "sighup"}}, "refused",
               shared=True, cfg_notify=signal_cfg(signal="sighup")),
    notify_row("notify signal pidFile empty", {"signal": {"pidFile": ""}}, "refused", shared=True,
               cfg_notify=signal_cfg("")),
    notify_row("notify signal without pidFile", {"signal": {"signal": "SIGHUP"}}, "refused", shared=True,
               cfg_notify={"signal": {"signal": "SIGHUP"}}),
    notify_row("notify signal pidFile ../app.pid", {"signal": {"pidFile": "../app.pid"}}, "refused", shared=True,
               cfg_notify=signal_cfg("../app.pid"),
               known="chart layout rule: the pid file stays on the notify volume; the binary takes any path"),
    notify_row("notify signal without shareProcessNamespace", {"signal": {"pidFile": "app.pid"}}, "refused",
               cfg_notify=signal_cfg(),
               known="chart rule: a signal needs the pod's shared process namespace, a pod setting the binary never sees"),
    notify_row("notify signal with the example app on another uid", {"signal": {"pidFile": "app.pid"}}, "refused",
               shared=True, extra=[("example", {"enabled": True, "runAsUser": 1000, "runAsGroup": 1000})],
               cfg_notify=signal_cfg(),
               known="chart rule: the example app must run as the sidecar's uid to be signalled, a pod setting"),
    notify_row("notify signal with the example app on the sidecar's uid", {"signal": {"pidFile": "app.pid"}}, "ok",
               shared=True, extra=[("example", {"enabled": True, "runAsUser": 65532, "runAsGroup": 65532})],
               cfg_notify=signal_cfg()),
    # The rest of the config.
    row("listen [::]:8099", [("config.listen", "[::]:8099")], "ok"),
    row("listen 0.0.0.0:9100", [("config.listen", "0.0.0.0:9100")], "ok"),
    row("listen localhost:8099", [("config.listen", "localhost:8099")], "refused"),
    row("listen :8099", [("config.listen", ":8099")], "refused"),
    row("listen port 99999", [("config.listen", "[::]:99999")], "refused"),
    row("listen 999.1.1.1:80", [("config.listen", "999.1.1.1:80")], "refused"),
    row("listen port 0", [("config.listen", "[::]:0")], "refused",
        known="chart rule: the probes and the metrics Service need a fixed port"),
    row("log.level info", [("config.log.level", "info")], "ok"),
    row("log.level INFO", [("config.log.level", "INFO")], "ok"),
    row("log.level directives", [("config.log.level", "info,token_vendor=debug")], "ok"),
    row("log.level ==", [("config.log.level", "==")], "refused"),
    row("log.level verbose", [("config.log.level", "verbose")], "refused",
        known="the binary reads an unknown word as a tracing target and logs nothing (reported to the lead)"),
    row("log.format text", [("config.log.format", "text")], "ok"),
    row("log.format xml", [("config.log.format", "xml")], "refused"),
    row("refresh.window [0.5, 0.75]", [("config.refresh.window", [0.5, 0.75])], "ok"),
    row("refresh.window [0.9, 0.5]", [("config.refresh.window", [0.9, 0.5])], "refused"),
    row("refresh.window [0.5, 1.0]", [("config.refresh.window", [0.5, 1.0])], "refused"),
    row("refresh.window [0, 0.5]", [("config.refresh.window", [0, 0.5])], "refused"),
    row("refresh.minBackoff 10ms", [("config.refresh.minBackoff", "10ms")], "ok"),
    row("refresh.minBackoff 5ms", [("config.refresh.minBackoff", "5ms")], "refused"),
    row("refresh.maxBackoff below minBackoff", [("config.refresh.maxBackoff", "500ms")], "refused"),
    row("reload.pollInterval 100ms", [("config.reload.pollInterval", "100ms")], "ok"),
    row("reload.pollInterval 50ms", [("config.reload.pollInterval", "50ms")], "refused"),
    row("onExit remove", [("config.onExit", "remove")], "ok"),
    row("onExit delete", [("config.onExit", "delete")], "refused"),
]


# --- applying changes ----------------------------------------------------------------------


def set_path(obj, path, value):
    parts = path.split(".")
    for i, p in enumerate(parts[:-1]):
        key = int(p) if isinstance(obj, list) else p
        if isinstance(obj, dict) and key not in obj:
            obj[key] = {}
        obj = obj[key]
    last = parts[-1]
    if isinstance(obj, list):
        idx = int(last)
        if value is DELETE:
            del obj[idx]
        elif idx == len(obj):
            obj.append(value)
        else:
            obj[idx] = value
    elif value is DELETE:
        obj.pop(last, None)
    else:
        obj[last] = value


def snake(k):
    return re.sub(r"([A-Z])", r"_\1", k).lower()


def config_changes(changes, values):
    """The config keys the chart values map to: [(config path, value)] and credential file contents."""
    out, creds = [], {}
    for path, value in changes:
        parts = path.split(".")
        if parts[0] == "config":
            out.append((".".join(snake(p) for p in parts[1:]), value))
        elif parts[0] == "outputMode":
            out.append(("tokens.*.outputs.*.mode", value))
        elif parts[0] == "podSecurityContext" and parts[1:] == ["fsGroup"]:
            out.append(("tokens.*.outputs.*.gid", value))
        elif parts[0] == "tokens" and len(parts) == 2:
            if value == "COPY0":
                out.append((path, "COPY0"))
            else:
                raise ValueError(f"no mapping for {path}")
        elif parts[0] == "serviceAccountToken":
            pass  # the pod's projected token volume: no config key (write_config_tree writes the file or not)
        elif parts[0] == "tokens":
            i, key = parts[1], parts[2]
            name = values["tokens"][int(i)]["name"]
            if key in ("clientId", "clientSecret"):
                creds[(int(i), snake(key))] = value
            elif key in ("privateKey", "certificate"):
                stem = snake(key)
                creds[(int(i), stem)] = value
                out.append((f"tokens.{i}.{stem}_file", DELETE if value is DELETE else f"{CRED}/{stem}"))
            elif key == "outputs" and len(parts) == 5 and parts[4] == "file":
                v = value if value is DELETE else f"{TOKEN_ROOT}/{name}/{value}"
                out.append((f"tokens.{i}.outputs.{parts[3]}.path", v))
            elif key == "http" and isinstance(value, dict):
                out.append((f"tokens.{i}.http", {snake(k): v for k, v in value.items()}))
            else:
                out.append((".".join(parts[:2] + [snake(p) for p in parts[2:]]), value))
        else:
            raise ValueError(f"no mapping for {path}")
    return out, creds


def apply_config(cfg, path, value):
    if path.startswith("tokens.*"):
        rest = path[len("tokens.*."):]
        for t in cfg["tokens"]:
            if rest.startswith("outputs.*."):
                for o in t["outputs"]:
                    o[rest[len("outputs.*."):]] = value
            else:
                set_path(t, rest, value)
        return
    if value == "COPY0":
        cfg["tokens"].append(copy.deepcopy(cfg["tokens"][0]))
        return
    set_path(cfg, path, value)


# --- running the two sides -------------------------------------------------------------------


def helm_template(chart, values, workdir, rid):
    vf = os.path.join(workdir, "values.yaml")
    with open(vf, "w") as f:
        json.dump(values, f, indent=1)  # JSON is YAML in which every string is quoted
    p = subprocess.run(["helm", "template", "tv", chart, "-f", vf], capture_output=True, text=True)
    return p.returncode == 0, p.stdout, p.stderr.strip()


def materialize(obj, workdir):
    """obj with every "PEM:<kind>:<key|cert|pkcs1>" sentinel replaced by a throwaway PEM."""
    if isinstance(obj, dict):
        return {k: materialize(v, workdir) for k, v in obj.items()}
    if isinstance(obj, list):
        return [materialize(v, workdir) for v in obj]
    if isinstance(obj, str) and obj.startswith("PEM:"):
        _, kind, what = obj.split(":")
        pem = kc.test_pem(workdir, kind)
        if what == "pkcs1":
            d = os.path.join(workdir, ".pem", kind)
            p = subprocess.run(["openssl", "pkey", "-in", f"{d}/key.pem", "-traditional"],
                               capture_output=True, check=True)
            return p.stdout.decode()
        return pem[what].decode()
    return obj


def write_config_tree(cfg, docs, workdir, creds_override, sa_token):
    """Writes cfg under workdir with every absolute path moved there; credential files (client id and
    secret, private key, certificate) from the rendered Secret (or the overrides; a key or certificate
    the Secret lacks: a throwaway PEM for the token's alg); TLS files as throwaway PEMs; assertion and
    subject token files as a JWT, except the projected token when sa_token is false (as in the pod).
    Returns the config path."""
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    secret = next((d for d in docs if d.get("kind") == "Secret"), {}) or {}
    data = secret.get("stringData") or {}
    cfg = kc.rewrite_paths(cfg, workdir)
    for i, t in enumerate(cfg.get("tokens") or []):
        pem = kc.test_pem(os.path.dirname(workdir), kc.pem_kind(t.get("alg")))
        for k in ("client_id", "client_secret", "private_key", "certificate"):
            p = t.get(f"{k}_file")
            if not p:
                continue
            os.makedirs(os.path.dirname(p), exist_ok=True)
            fallback = {"private_key": pem["key"].decode(), "certificate": pem["cert"].decode()}.get(k, f"dummy-{k}")
            if creds_override.get((i, k), DELETE) is not DELETE:
                content = materialize(creds_override[(i, k)], os.path.dirname(workdir))
            else:
                content = data.get(f"{os.path.basename(os.path.dirname(p))}.{k}", fallback)
            with open(p, "w") as f:
                f.write(str(content))
        for k in ("client_assertion_file", "subject_token_file"):
            p = t.get(k)
            if not isinstance(p, str) or (p == workdir + SA and not sa_token):
                continue
            p = p if os.path.isabs(p) else os.path.join(workdir, p)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(kc.test_jwt())
        for k, pem in (("ca_file", "cert"), ("client_cert_file", "cert"), ("client_key_file", "key")):
            p = (t.get("http") or {}).get(k)
            if isinstance(p, str) and p.startswith(workdir):
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(kc.test_pem(os.path.dirname(workdir))[pem])
    os.makedirs(workdir + TOKEN_ROOT, exist_ok=True)
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    return path


def run_check(binary, cfg_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # no proxy variables from outside
    p = subprocess.run([binary, "check", "--config", cfg_path], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(cfg_path))
    msg = " ".join(l.strip() for l in (p.stdout + p.stderr).splitlines() if "problem" not in l)[:240]
    return p.returncode == 0, msg


def rendered_config(docs):
    cm = next(d for d in docs if d.get("kind") == "ConfigMap" and "config.yaml" in (d.get("data") or {}))
    return yaml.safe_load(cm["data"]["config.yaml"])


def main():
    chart, binary, workdir = (os.path.abspath(a) for a in sys.argv[1:4])
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(HERE, "tokens-values.yaml")) as f:
        base = yaml.safe_load(f)
    ok, out, err = helm_template(chart, base, workdir, "base")
    if not ok:
        print(f"FAIL the base values do not render: {err}")
        return 1
    base_docs = [d for d in yaml.safe_load_all(out) if d]
    base_cfg = rendered_config(base_docs)
    bad = 0
    table = [r for r in TABLE if re.search(os.environ.get("ONLY") or "", r["id"])]
    width = max(len(r["id"]) for r in TABLE)
    print(f"{'row':<{width}}  chart    check    rendered  verdict")
    counts = {"ok": 0, "refused": 0}
    for r in table:
        values = copy.deepcopy(base)
        for path, value in r["changes"]:
            if value == "COPY0":
                values["tokens"].append(copy.deepcopy(values["tokens"][0]))
            else:
                set_path(values, path, value)
        sa_token = bool((values.get("serviceAccountToken") or {}).get("enabled"))
        chart_ok, out, err = helm_template(chart, materialize(values, workdir), workdir, r["id"])
        if r["cfg"] is not None:
            cfg_changes, creds = r["cfg"], {}
        else:
            cfg_changes, creds = config_changes(r["changes"][r["skip"]:], base)
            cfg_changes = r["pre_cfg"] + cfg_changes
        cfg = copy.deepcopy(base_cfg)
        for path, value in cfg_changes:
            apply_config(cfg, path, value)
        check_ok, check_msg = run_check(binary, write_config_tree(cfg, base_docs, os.path.join(workdir, "mapped"), creds,
                                                                  sa_token))
        rendered = "-"
        problems = []
        if chart_ok:
            docs = [d for d in yaml.safe_load_all(out) if d]
            r_ok, r_msg = run_check(binary, write_config_tree(rendered_config(docs), docs,
                                                              os.path.join(workdir, "rendered"), {}, sa_token))
            rendered = "ok" if r_ok else "refused"
            if not r_ok:
                problems.append(f"the chart renders a config that check refuses: {r_msg}")
        cv = "ok" if chart_ok else "refused"
        kv = "ok" if check_ok else "refused"
        counts[cv] += 1
        if cv != r["expect"]:
            problems.append(f"the chart's verdict is {cv}, the table expects {r['expect']}"
                            + (f" ({err.splitlines()[-1] if err else ''})" if err else ""))
        verdict = "agree"
        if chart_ok != check_ok:
            if r["known"] and not chart_ok and check_ok:
                verdict = "known: " + r["known"]
            else:
                problems.append(f"chart {cv} but check {kv}"
                                + (f"; check says: {check_msg}" if not check_ok else f"; helm says: {err[-300:]}"))
        elif r["known"]:
            verdict = "agree (the known difference is gone: drop `known`)"
        print(f"{r['id']:<{width}}  {cv:<8} {kv:<8} {rendered:<9} {verdict if not problems else 'FAIL'}")
        if os.environ.get("VERBOSE"):
            if err:
                why = [l for l in err.splitlines() if "error calling fail" in l or "- at '" in l] or err.splitlines()
                print(f"    helm: {why[0].split('error calling fail: ')[-1].strip()[:300]}")
            if not check_ok:
                print(f"    check: {check_msg}")
        for p in problems:
            bad += 1
            print(f"  FAIL {r['id']}: {p}")
    only = f" (ONLY={os.environ['ONLY']!r}: {len(TABLE) - len(table)} of {len(TABLE)} rows NOT run)" if len(table) < len(TABLE) else ""
    print(f"{len(table)} rows ({counts['ok']} accepted, {counts['refused']} refused by the chart), "
          f"{sum(1 for r in table if r['known'])} known chart-stricter rows, {bad} problem(s){only}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
