#!/usr/bin/env bash
# Build a Lambda-like python3.12 image for `sam local` from Debian packages, offline from any
# container registry: debootstrap (bookworm, minbase) + pyenv's CPython 3.12 tree at /var/lang +
# awslambdaric and boto3 in /var/runtime + /var/runtime/bootstrap. It is a STAND-IN for AWS's
# public.ecr.aws/lambda/python:3.12 (Amazon Linux 2023), not a copy of it.
#
# boto3/botocore: AWS documents no fixed version for the python3.12 runtime. The Lambda developer
# guide (https://docs.aws.amazon.com/lambda/latest/dg/lambda-python.html, "Runtime-included SDK
# versions") says it "depends on the runtime version and your AWS Region" and tells you to print
# boto3.__version__ from a function. The image pins boto3/botocore 1.34.145, a 1.34 release from
# the runtime's lifetime and far older than the development pin (constraints.txt), so code that
# needs a newer SDK than Lambda may ship fails here, not in AWS. Change BOTO3_VERSION to match
# what your functions print in your Region.
#
# Prints the image reference (NAME:TAG) on stdout; everything else goes to stderr. The tag is a
# hash of this script, the versions and the Python build, so a second run finds the image and
# skips the build. Needs root (debootstrap), a running Docker daemon and the Debian mirror.
set -euo pipefail

IMAGE_NAME=${LAMBDA_IMAGE_NAME:-lipsync-lambda-python3.12}
BOTO3_VERSION=${BOTO3_VERSION:-1.34.145}
AWSLAMBDARIC_VERSION=${AWSLAMBDARIC_VERSION:-3.1.1}
SUITE=bookworm
# The mirror apt already uses on this machine (a package registry CI reaches), else Debian's.
apt_mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
MIRROR=${DEBIAN_MIRROR:-${apt_mirror:-http://deb.debian.org/debian}}
RUNTIME_LIBS=libssl3,libffi8,libsqlite3-0,liblzma5,libbz2-1.0,zlib1g,libreadline8,libncursesw6,libgdbm6,libuuid1,ca-certificates

log() { echo "lambda_image: $*" >&2; }

python312=${PYTHON312:-}
if [[ -z $python312 ]]; then
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    [[ -x $candidate ]] && python312=$candidate && break
  done
fi
[[ -n $python312 && -x $python312 ]] || { log "no CPython 3.12 tree found (pyenv install 3.12, or set PYTHON312)"; exit 1; }
python_prefix=$("$python312" -c 'import sys; print(sys.base_prefix)')
python_build=$("$python312" -c 'import sys; print(sys.version)')

script_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-64)
tag=$(printf '%s\n' "$script_hash" "$BOTO3_VERSION" "$AWSLAMBDARIC_VERSION" "$SUITE" "$MIRROR" "$python_build" \
  | sha256sum | cut -c1-16)
image="$IMAGE_NAME:$tag"

if docker image inspect "$image" >/dev/null 2>&1; then
  log "$image is built already"
  echo "$image"
  exit 0
fi

command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get install -y -qq debootstrap >&2; }
work=$(mktemp -d /tmp/lambda-image.XXXXXX)
rootfs=$work/rootfs
cleanup() {
  # debootstrap mounts proc (and sys) inside the root; never delete through a mount.
  findmnt -rn -o TARGET | grep -F "$rootfs/" | sort -r | xargs -r umount -l || true
  findmnt -rn -o TARGET | grep -qF "$rootfs/" || rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS

log "debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase --include="$RUNTIME_LIBS" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

log "python $python_build from $python_prefix -> /var/lang"
mkdir -p "$rootfs/var/lang" "$rootfs/var/runtime" "$rootfs/var/task" "$rootfs/opt"
cp -a "$python_prefix/." "$rootfs/var/lang/"
# Not part of Lambda's Python: the test suite, and any third-party .pth (site hooks of this machine).
rm -rf "$rootfs/var/lang/lib/python3.12/test"
find "$rootfs/var/lang/lib/python3.12/site-packages" -maxdepth 1 -name '*.pth' -print -delete >&2

log "awslambdaric $AWSLAMBDARIC_VERSION, boto3 $BOTO3_VERSION -> /var/runtime"
"$python312" -m pip install --quiet --disable-pip-version-check --no-compile --only-binary=:all: \
  --python-version 3.12 --platform manylinux2014_x86_64 --implementation cp \
  --target "$rootfs/var/runtime" \
  "awslambdaric==$AWSLAMBDARIC_VERSION" "boto3==$BOTO3_VERSION" "botocore==$BOTO3_VERSION" >&2
find "$rootfs/var/runtime" -maxdepth 1 -name '*.pth' -print -delete >&2
chroot "$rootfs" /usr/bin/env LD_LIBRARY_PATH=/var/lang/lib /var/lang/bin/python3.12 -m compileall -q -j 2 \
  /var/runtime /var/lang/lib/python3.12 >/dev/null 2>&1 || true

cat >"$rootfs/var/runtime/bootstrap" <<'BOOTSTRAP'
#!/bin/sh
# Lambda's python3.12 bootstrap, reduced: the runtime interface client runs $_HANDLER.
export PYTHONPATH=/var/runtime:/var/task:/opt/python:/opt/python/lib/python3.12/site-packages
cd /var/task || exit 1
exec /var/lang/bin/python3.12 -m awslambdaric "$_HANDLER"
BOOTSTRAP
chmod 755 "$rootfs/var/runtime/bootstrap"

log "docker import $image"
tar -C "$rootfs" -c . | docker import \
  --change 'ENV LAMBDA_TASK_ROOT=/var/task' \
  --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV TZ=:/etc/localtime' \
  --change 'ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin' \
  --change 'ENV LD_LIBRARY_PATH=/var/lang/lib' \
  --change 'WORKDIR /var/task' \
  --change 'ENTRYPOINT ["/var/runtime/bootstrap"]' \
  - "$image" >/dev/null
docker run --rm --network none -e PYTHONPATH=/var/runtime --entrypoint /var/lang/bin/python3.12 "$image" \
  -c "import awslambdaric, boto3, botocore; assert boto3.__version__ == '$BOTO3_VERSION', boto3.__version__" >&2 \
  || { docker rmi "$image" >/dev/null; log "the image does not import its runtime; removed it"; exit 1; }
log "built $image in $((SECONDS - started)) s"
echo "$image"
