#!/usr/bin/env bash
# The Kubernetes manifests in deploy/kubernetes, checked without a cluster:
#   - every manifest is listed in kustomization.yaml, and everything listed
#     exists; no YAML mapping repeats a key (the last one would silently win);
#   - every object validates against the Kubernetes API schemas in strict mode
#     (unknown fields are errors) with kubernetes-validate, pinned, against two
#     pinned Kubernetes versions: the oldest these manifests support and the
#     newest the validator knows. An object whose kind or apiVersion has no
#     schema there (a typo, or an API removed since) is a failure, although
#     kubernetes-validate itself only warns about it;
#   - what schemas cannot see: selectors match the pod labels, named ports
#     exist, the autoscaler and envFrom name objects that are there, the
#     termination grace period outlasts preStop plus the drain, and the memory
#     limit covers the gateway's hard memory bounds;
#   - when kubectl is installed, `kubectl kustomize` renders the directory and
#     the rendered objects are validated the same way.
#
#   bash .ci/k8s-validate.sh
#
# Environment:
#   K8S_VALIDATE_DIR   the manifests (default deploy/kubernetes)
#   K8S_VALIDATE_VENV  the Python virtualenv to (re)use
#                      (default ${TMPDIR:-/tmp}/kafka-gateway-k8s-validate-venv)
# Every step fails loudly; the last line is "k8s-validate: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }
die() { printf 'k8s-validate: %s\n' "$*" >&2; exit 1; }

validator_version=1.37.0
kubernetes_versions=(1.31.0 1.37.0)
dir=${K8S_VALIDATE_DIR:-deploy/kubernetes}

[ -d "$dir" ] || die "no directory $dir"
command -v python3 >/dev/null || die "python3 is needed and not installed"

manifests=()
while IFS= read -r -d '' file; do
    manifests+=("$file")
done < <(find "$dir" -type f \( -name '*.yaml' -o -name '*.yml' \) \
    ! -name kustomization.yaml ! -name kustomization.yml -print0 | sort -z)
[ "${#manifests[@]}" -gt 0 ] || die "no manifests (*.yaml, *.yml) in $dir"
[ -f "$dir/kustomization.yaml" ] || die "no $dir/kustomization.yaml"

step "kubernetes-validate $validator_version"
venv=${K8S_VALIDATE_VENV:-${TMPDIR:-/tmp}/kafka-gateway-k8s-validate-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" || die "cannot create a virtualenv in $venv (apt-get install python3-venv)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$validator_version"
validator=$venv/bin/kubernetes-validate
installed=$("$validator" --version)
[ "$installed" = "$validator_version" ] || die "kubernetes-validate $installed installed, $validator_version wanted"
echo "kubernetes-validate $installed; Kubernetes ${kubernetes_versions[*]}; strict; ${#manifests[@]} manifests in $dir"

passed=0
failed=0
failures=()
fail() { failed=$((failed + 1)); failures+=("$1"); }

# Validates FILE (or - for the rendered kustomization) against every pinned
# version, counting one result per object and version. Only "INFO ...
# passed ... against version X.Y" lines pass; every other result (ERROR, a WARN
# that no schema exists, FATAL, a YAML error) is a failure, and so are a
# file with no object and a non-zero exit with no result.
validate() { # FILE LABEL
    local file=$1 label=$2 version out status line ok bad
    for version in "${kubernetes_versions[@]}"; do
        status=0
        if [ "$file" = - ]; then
            out=$("$validator" --strict -k "$version" - <"$rendered" 2>&1) || status=$?
        else
            out=$("$validator" --strict -k "$version" "$file" 2>&1) || status=$?
        fi
        ok=0
        bad=0
        while IFS= read -r line; do
            [ -n "$line" ] || continue
            echo "$line"
            if [[ $line == "INFO "*" passed for resource "*" against version ${version%.*}" ]]; then
                ok=$((ok + 1))
            elif [[ $line =~ ^(INFO|WARN|ERROR|FATAL|"Couldn't") ]]; then
                bad=$((bad + 1))
                fail "$label (Kubernetes $version): $line"
            fi # else the rest of a message already counted (a YAML error spans lines)
        done <<<"$out"
        if [ "$bad" -eq 0 ] && [ "$status" -ne 0 ]; then
            fail "$label (Kubernetes $version): kubernetes-validate exited $status"
        elif [ "$bad" -eq 0 ] && [ "$ok" -eq 0 ]; then
            echo "ERROR $label: no Kubernetes object in it"
            fail "$label (Kubernetes $version): no Kubernetes object in it"
        fi
        passed=$((passed + ok))
    done
}

step "kustomization, duplicate keys, and what schemas cannot see"
checks_status=0
checks=$("$venv/bin/python" - "$dir" "${manifests[@]}" 2>&1 <<'PY'
import os, re, sys
import yaml

directory, files = sys.argv[1], sys.argv[2:]

class UniqueKeyLoader(yaml.SafeLoader):
    pass

def mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)

UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping_without_duplicates)

results = []
def check(ok, what):
    results.append(ok)
    print(("PASS " if ok else "FAIL ") + what)

def load(path):
    try:
        with open(path) as f:
            return [doc for doc in yaml.load_all(f, Loader=UniqueKeyLoader) if doc]
    except yaml.YAMLError as e:
        check(False, f"{path}: {e}".replace("\n", " "))
        return []

objects = []
for path in files:
    docs = load(path)
    if docs:
        check(True, f"{path}: YAML without repeated keys")
    objects += [(path, d) for d in docs if isinstance(d, dict)]

kustomization = os.path.join(directory, "kustomization.yaml")
docs = load(kustomization)
k = docs[0] if docs and isinstance(docs[0], dict) else {}
listed = {os.path.normpath(os.path.join(directory, r)) for r in k.get("resources") or []}
present = {os.path.normpath(f) for f in files}
check(k.get("kind") == "Kustomization", f"{kustomization}: kind Kustomization")
check(not present - listed,
      f"{kustomization} lists every manifest" + (f" (missing: {sorted(present - listed)})" if present - listed else ""))
check(not listed - present,
      f"{kustomization} lists only files that exist" + (f" (not found: {sorted(listed - present)})" if listed - present else ""))

def named(kind):
    return {d["metadata"]["name"]: d for _, d in objects
            if d.get("kind") == kind and isinstance(d.get("metadata"), dict) and "name" in d["metadata"]}

deployments, services, configmaps = named("Deployment"), named("Service"), named("ConfigMap")
check(bool(deployments), "a Deployment is there")

def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

def size(text):
    m = re.fullmatch(r"\s*(\d+)\s*(|B|KiB|KB|MiB|MB|GiB|GB)\s*", str(text))
    if not m:
        raise ValueError(f"not a size: {text!r}")
    unit = {"": 1, "B": 1, "KiB": 1 << 10, "KB": 1 << 10, "MiB": 1 << 20, "MB": 1 << 20,
            "GiB": 1 << 30, "GB": 1 << 30}[m.group(2)]
    return int(m.group(1)) * unit

def seconds(text):
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m)\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]

def quantity(text):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(text))
    if not m:
        raise ValueError(f"not a memory quantity this check reads: {text!r}")
    return int(m.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[m.group(2)]

for name, dep in deployments.items():
    where = f"deployment/{name}"
    spec = dep["spec"]
    pod = spec["template"]
    labels = pod["metadata"].get("labels", {})
    check(selects(spec["selector"].get("matchLabels"), labels), f"{where}: its selector matches its pod labels")
    containers = pod["spec"]["containers"]
    ports = {p["name"] for c in containers for p in c.get("ports", []) if "name" in p}
    for c in containers:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = (c.get(probe) or {}).get("httpGet", {}).get("port")
            if isinstance(port, str):
                check(port in ports, f"{where}: {probe} port {port!r} is a container port")
        for source in c.get("envFrom", []):
            ref = (source.get("configMapRef") or {}).get("name")
            if ref is not None and not (source["configMapRef"].get("optional")):
                check(ref in configmaps, f"{where}: envFrom ConfigMap {ref!r} is there")

        # The gateway's settings as the container sees them: envFrom, then env.
        env = {}
        for source in c.get("envFrom", []):
            ref = (source.get("configMapRef") or {}).get("name")
            env.update((configmaps.get(ref) or {}).get("data") or {})
        env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})

        # terminationGracePeriodSeconds > preStop sleep + drain.
        pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {})
        command = (pre_stop.get("exec") or {}).get("command") or []
        sleep = float(command[1]) if len(command) == 2 and command[0] in ("sleep", "/bin/sleep") else \
            float((pre_stop.get("sleep") or {}).get("seconds", 0))
        drain = seconds(env.get("KAFKA_GATEWAY_SHUTDOWN_TIMEOUT", "30s"))
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        check(grace > sleep + drain,
              f"{where}: terminationGracePeriodSeconds {grace} > preStop {sleep:g} s + KAFKA_GATEWAY_SHUTDOWN_TIMEOUT {drain:g} s")

        # memory limit >= the hard bounds: the in-flight budget, librdkafka's
        # queue, 1 MiB of HTTP/2 buffers per connection (the baseline on top
        # is an estimate, in the manifest's comment).
        options = dict(pair.split("=", 1) for pair in env.get("KAFKA_GATEWAY_LIBRDKAFKA_OPTIONS", "").split(";") if "=" in pair)
        budget = size(env.get("KAFKA_GATEWAY_MAX_TOTAL_IN_FLIGHT_BYTES", "256MiB"))
        queue = int(options.get("queue.buffering.max.kbytes", 1048576)) << 10
        http2 = int(env.get("KAFKA_GATEWAY_MAX_CONNECTIONS", "1024")) << 20
        limit = (c.get("resources") or {}).get("limits", {}).get("memory")
        bounds = budget + queue + http2
        check(limit is not None and quantity(limit) > bounds,
              f"{where}: memory limit {limit} > in-flight {budget >> 20} MiB + librdkafka queue {queue >> 20} MiB"
              f" + HTTP/2 {http2 >> 20} MiB = {bounds >> 20} MiB")

    for kind in ("Service", "PodDisruptionBudget"):
        for other, obj in named(kind).items():
            selector = obj["spec"].get("selector") or {}
            selector = selector.get("matchLabels", selector) if kind != "Service" else selector
            if selects(selector, labels):
                check(True, f"{kind.lower()}/{other}: selects deployment/{name}'s pods")
                if kind == "Service":
                    for p in obj["spec"].get("ports", []):
                        target = p.get("targetPort")
                        if isinstance(target, str):
                            check(target in ports, f"service/{other}: targetPort {target!r} is a container port")

for kind in ("Service", "PodDisruptionBudget"):
    for other, obj in named(kind).items():
        selector = obj["spec"].get("selector") or {}
        selector = selector.get("matchLabels", selector) if kind != "Service" else selector
        if not any(selects(selector, d["spec"]["template"]["metadata"].get("labels", {})) for d in deployments.values()):
            check(False, f"{kind.lower()}/{other}: selects no Deployment's pods")

for name, hpa in named("HorizontalPodAutoscaler").items():
    ref = hpa["spec"]["scaleTargetRef"]
    check(ref.get("kind") == "Deployment" and ref.get("name") in deployments,
          f"horizontalpodautoscaler/{name}: scales {ref.get('kind')}/{ref.get('name')}, which is there")

if not results:
    check(False, "no check ran")
PY
) || checks_status=$?
echo "$checks"
passed=$((passed + $(grep -c '^PASS ' <<<"$checks" || true)))
while IFS= read -r line; do
    fail "${line#FAIL }"
done < <(grep '^FAIL ' <<<"$checks" || true)
[ "$checks_status" -eq 0 ] || fail "the checks above stopped with exit status $checks_status"

step "each manifest against the Kubernetes API schemas (strict)"
for file in "${manifests[@]}"; do
    validate "$file" "$file"
done

step "kubectl kustomize $dir, validated the same way"
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
if command -v kubectl >/dev/null; then
    if kubectl kustomize "$dir" >"$rendered"; then
        echo "rendered $(grep -c '^kind: ' "$rendered") objects"
        validate - "kubectl kustomize $dir"
    else
        fail "kubectl kustomize $dir failed"
    fi
else
    echo "kubectl is not installed: the kustomization was checked above, but not rendered"
fi

echo
if [ "$failed" -gt 0 ]; then
    echo "FAILED:"
    printf '  %s\n' "${failures[@]}"
fi
echo "k8s-validate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
