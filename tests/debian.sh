# Installs Debian packages the test run needs and the machine lacks;
# sourced by the scripts that start the run's services.

# The package of each command that is missing (`command=package`; a
# command may be a path, e.g. /usr/bin/chromium), in one apt-get run.
debian_install() { # command=package ...
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
    done
    [ ${#missing[@]} -eq 0 ] || debian_packages "${missing[@]}"
}

debian_packages() { # package ...
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    echo "tests: installing $* from Debian's packages"
    "${sudo[@]}" apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
