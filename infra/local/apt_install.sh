# Sourced by the install_*.sh scripts: `apt_install PACKAGE WHAT` installs a Debian package the caller
# found missing (its own check, before calling), as root and non-interactively; run by anyone else it
# says in one line what to run and exits 2. Nothing here runs when a script's check finds the tool.
apt_install() {
    local package="$1" what="$2"
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "$what is not installed: run 'sudo apt-get install -y $package' (or re-run as root)" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "$package"
}
