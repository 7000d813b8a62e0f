#!/usr/bin/env bash
# The upstream MCS API conformance suite (sigs.k8s.io/mcs-api/conformance,
# Ginkgo) on the kind federation up.sh built, its report kept under
# $STATE/mcs-conformance. Needs Go and git besides what up.sh needs.
# Written to run as is where Docker and kind exist; NOT run here.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MCS_API_REF="${MCS_API_REF:-master}"
WORK="$STATE/mcs-api"
REPORT="$STATE/mcs-conformance"
mkdir -p "$REPORT"
if [ ! -d "$WORK/.git" ]; then
  git clone --depth 1 --branch "$MCS_API_REF" https://github.com/kubernetes-sigs/mcs-api "$WORK"
fi

contexts=""
for c in "${CLUSTERS[@]}"; do contexts+="${contexts:+,}kind-$c"; done

cd "$WORK/conformance"
set +e
go test -timeout 60m . -args \
  --contexts="$contexts" \
  --ginkgo.v \
  --ginkgo.junit-report="$REPORT/junit.xml" 2>&1 | tee "$REPORT/output.txt"
status=${PIPESTATUS[0]}
set -e
echo "conformance report: $REPORT/junit.xml (exit $status)"
exit "$status"
