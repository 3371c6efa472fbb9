#!/bin/sh
# The fixed test keys, generated once (not secrets: tests only). DER because
# jsonwebtoken is built without its `use_pem` feature: PKCS#8 for Ed25519 and
# P-256, PKCS#1 for RSA, as EncodingKey::from_{ed,ec,rsa}_der expect.
set -eu
cd "$(dirname "$0")"
pkcs8() { openssl pkcs8 -topk8 -nocrypt -outform DER -out "$1.der"; }
openssl genpkey -algorithm ed25519 | pkcs8 ed25519-a
openssl genpkey -algorithm ed25519 | pkcs8 ed25519-b
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 | pkcs8 p256
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null |
  openssl rsa -traditional -outform DER -out rsa2048.der
