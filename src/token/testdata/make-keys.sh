#!/usr/bin/env bash
# Makes the fixed test keys of token::jws's unit tests (run once; the outputs are committed, the tests only read them).
# Test keys only: they sign nothing outside the unit tests. Everything here is made by openssl, independently of the
# code under test, so the tests can check that code against it:
#   NAME.pem          PKCS#8 private key (what the daemon reads)
#   NAME.public       the public key as ring verifies it: RSAPublicKey DER (RSA), the uncompressed point (EC)
#   rsa-pkcs1.pem, p256-sec1.pem   the same keys in their traditional forms (refused with a hint)
#   rsa-encrypted.pem              rsa.pem encrypted (passphrase "test"; refused)
#   rsa-1024.pem, p521.pem, ed25519.pem   keys of a type or size the module refuses
set -euo pipefail
cd "$(dirname "$0")"
for name in rsa rsa-other; do
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$name.pem"
  openssl rsa -in "$name.pem" -RSAPublicKey_out -outform DER -out "$name.public"
done
for curve in 256 384; do
  openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:P-$curve" -out "p$curve.pem"
  # The SubjectPublicKeyInfo ends with the point: 04 || x || y, 65 bytes for P-256, 97 for P-384.
  openssl pkey -in "p$curve.pem" -pubout -outform DER | tail -c "$((1 + 2 * curve / 8))" >"p$curve.public"
done
openssl rsa -in rsa.pem -traditional -out rsa-pkcs1.pem
openssl ec -in p256.pem -out p256-sec1.pem
openssl pkcs8 -topk8 -in rsa.pem -v2 aes-256-cbc -passout pass:test -out rsa-encrypted.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa-1024.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out p521.pem
openssl genpkey -algorithm ed25519 -out ed25519.pem
