#!/bin/bash
# The booted-guest test of the Debian package (`cargo xtask test --kernel 6.1`, suite `boot`):
# runs inside a Debian 12 guest with systemd as PID 1, on a disk image the host made for this
# run (xtask/src/boot.rs). Two boots of the same disk:
#
#   guest.sh install   apt-get install ./edge-ctl_*.deb, configure the NIC (serve.toml, a
#                      policy, systemd-networkd with a static address), enable the service.
#   guest.sh check     after the reboot: the filter was attached before network-pre.target,
#                      picked up the address networkd configured after it; stop leaves it
#                      attached and counting, restart adopts it, a broken policy keeps the old
#                      one and is in the journal, remove leaves the filter, purge removes the
#                      conffiles and says what it leaves.
#
# Every check prints "ok - what" or "FAIL - what" with the evidence; the exit status is the
# number of failures (0: all passed).
set -u
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
failures=0
ok() { echo "ok - $*"; }
fail() {
  echo "FAIL - $*"
  failures=$((failures + 1))
}
check() { # check "what" command...
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}
# The NIC QEMU gives the guest: the only interface but lo.
nic() { ls /sys/class/net | grep -v '^lo$' | head -n1; }
# The id of the XDP program attached to $1 ("none" when there is none).
xdp_id() {
  local id
  id=$(ip -details link show dev "$1" | grep -o 'prog/xdp id [0-9]*' | grep -o '[0-9]*$')
  echo "${id:-none}"
}
# Every packet counter of the interface, summed (rules, drops, passes; ingress and egress).
packets() { edge-ctl stats "$1" --json | grep -o '"packets": *[0-9]*' | awk -F: '{s += $2} END {print s + 0}'; }
# Sends a few UDP datagrams out of the NIC (to a documentation address with a static
# neighbour entry, so they leave without ARP): the egress program judges and counts each.
send() {
  ip neigh replace 192.0.2.1 lladdr 02:00:00:00:00:01 dev "$1" nud permanent
  for _ in 1 2 3 4 5; do echo probe 2>/dev/null >/dev/udp/192.0.2.1/5061 || true; done
}
# GET /metrics from the daemon, over bash's /dev/tcp (the image has no HTTP client).
scrape() {
  exec 3<>/dev/tcp/127.0.0.1/9469 || return 1
  printf 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
  timeout 10 cat <&3
  exec 3<&-
}
# Waits up to $1 seconds for the command to succeed.
until_ok() {
  local limit=$1
  shift
  for _ in $(seq "$((limit * 4))"); do
    "$@" && return 0
    sleep 0.25
  done
  return 1
}
monotonic() { systemctl show -P "$2" "$1"; }

install() {
  local ifname
  ifname=$(nic)
  [ -n "$ifname" ] || { fail "the guest has a NIC"; return; }
  echo "# NIC: $ifname"
  cd /root || return
  check "apt-get install ./edge-ctl_*.deb" apt-get install -y -q --no-install-recommends ./edge-ctl_*.deb
  check "the binary runs" edge-ctl --version
  check "man pages edge-ctl(8) and edge-ctl-serve(8)" test -f /usr/share/man/man8/edge-ctl.8.gz -a -f /usr/share/man/man8/edge-ctl-serve.8.gz
  check "bash completion" test -f /usr/share/bash-completion/completions/edge-ctl
  check "the conffiles" dpkg-query --control-show edge-ctl conffiles
  check "installing enables nothing" sh -c '! systemctl is-enabled -q edge-ctl'
  check "nothing is attached by the install" test "$(xdp_id "$ifname")" = none
  # The admin's configuration: the example policy, the NIC as the external interface, and the
  # address the network configuration gives it (after network-pre.target).
  cp /etc/edge-ctl/examples/lync2013-edge-hlb.toml /etc/edge-ctl/policy.toml
  cat >/etc/edge-ctl/serve.toml <<EOF
[[interface]]
name = "$ifname"
role = "external"
policy = "/etc/edge-ctl/policy.toml"
EOF
  mkdir -p /etc/systemd/network
  cat >/etc/systemd/network/10-edge.network <<EOF
[Match]
Name=$ifname
[Network]
Address=192.0.2.10/24
LinkLocalAddressing=no
EOF
  check "the policy checks" edge-ctl policy check /etc/edge-ctl/policy.toml
  check "systemctl enable edge-ctl" systemctl enable -q edge-ctl systemd-networkd
  sync
}

check_boot() {
  local ifname id id2 before after n_pre n_edge n_networkd
  ifname=$(nic)
  echo "# NIC: $ifname"
  systemctl is-system-running --wait >/dev/null
  check "edge-ctl.service is active after the reboot" systemctl is-active -q edge-ctl
  id=$(xdp_id "$ifname")
  check "an XDP program is attached to $ifname (id $id)" test "$id" != none
  # Order: edge-ctl.service became active (Type=notify: after attaching) before
  # network-pre.target was reached, and networkd started after it.
  n_edge=$(monotonic edge-ctl.service ActiveEnterTimestampMonotonic)
  n_pre=$(monotonic network-pre.target ActiveEnterTimestampMonotonic)
  n_networkd=$(monotonic systemd-networkd.service ExecMainStartTimestampMonotonic)
  echo "# monotonic us: edge-ctl ready $n_edge, network-pre.target $n_pre, networkd started $n_networkd"
  check "edge-ctl was ready before network-pre.target" test "$n_edge" -gt 0 -a "$n_edge" -le "$n_pre"
  check "systemd-networkd started after edge-ctl was ready" test "$n_networkd" -ge "$n_edge"
  journalctl -b -o short-monotonic --no-pager | grep -E 'edge-ctl|network-pre|Preparation for Network' | head -n 20 | sed 's/^/# /'
  check "the journal has the attach before network-pre.target" sh -c \
    "journalctl -b -o cat --no-pager | grep -E ': attached as external|Reached target .*(network-pre|Preparation for Network)' | head -n1 | grep -q 'attached as external'"
  # The address came after the attach: serve compiled the policy again for it.
  check "the filter picked up 192.0.2.10 (networkd configured it after the attach)" until_ok 30 sh -c \
    "edge-ctl status --json | grep -q '192.0.2.10'"
  journalctl -u edge-ctl -b -o cat --no-pager | sed 's/^/# edge-ctl: /' | tail -n 12
  check "the metrics endpoint answers" bash -c "$(declare -f scrape); scrape | grep -q '^edge_ctl_interface_attached{.*} 1'"

  # stop: the filter stays attached and counting.
  check "systemctl stop edge-ctl" systemctl stop edge-ctl
  before=$(packets "$ifname")
  send "$ifname"
  after=$(packets "$ifname")
  check "stopped: still attached (XDP id $(xdp_id "$ifname"))" test "$(xdp_id "$ifname")" = "$id"
  check "stopped: still counting ($before -> $after packets)" test "$after" -gt "$before"

  # restart: adopts the live filter, no new attach.
  check "systemctl restart edge-ctl" systemctl restart edge-ctl
  id2=$(xdp_id "$ifname")
  check "restarted: the same program (XDP id $id -> $id2)" test "$id2" = "$id"
  check "restarted: adopted, in the journal" until_ok 20 sh -c \
    "journalctl -u edge-ctl -b -o cat --no-pager | grep -q '$ifname: adopted'"

  # A broken policy file: the live policy stays, and the journal says why.
  local hash
  hash=$(edge-ctl status --json | grep -o '"policy_hash": *"[0-9a-f]*"' | head -n1)
  printf '[[rule]]\nname = "broken"\nports = [99999]\n' >/etc/edge-ctl/policy.toml
  check "a broken policy is logged in the journal" until_ok 30 sh -c \
    "journalctl -u edge-ctl -b -o cat --no-pager | grep -q 'not applied, the live policy stays'"
  journalctl -u edge-ctl -b -o cat --no-pager | grep -A3 'not applied' | head -n 4 | sed 's/^/# edge-ctl: /'
  check "the live policy is the old one ($hash)" sh -c "edge-ctl status --json | grep -q '$hash'"
  check "the failure is counted" bash -c "$(declare -f scrape); scrape | grep -q '^edge_ctl_policy_reload_failures_total{.*} 1'"
  check "still attached" test "$(xdp_id "$ifname")" = "$id"

  # remove: the binary goes, the filter stays; purge: the conffiles go.
  check "apt-get remove edge-ctl" apt-get remove -y -q edge-ctl
  check "removed: no binary" test ! -e /usr/sbin/edge-ctl
  check "removed: the conffiles stay" test -f /etc/edge-ctl/serve.toml
  check "removed: the filter stays attached" test "$(xdp_id "$ifname")" = "$id"
  check "apt-get purge edge-ctl" apt-get purge -y -q edge-ctl
  check "purged: serve.toml and the example policy are gone" test ! -e /etc/edge-ctl/serve.toml -a ! -e /etc/edge-ctl/examples
  check "purged: the admin's own policy.toml stays (not a conffile)" test -f /etc/edge-ctl/policy.toml
  check "purged: the filter stays attached (pinned)" test "$(xdp_id "$ifname")" = "$id"
  check "purged: the pins are where the postrm says" test -d /sys/fs/bpf/edge-ctl
}

case "${1:-}" in
  install) install ;;
  check) check_boot ;;
  *)
    echo "usage: guest.sh install|check" >&2
    exit 2
    ;;
esac
echo "# $failures failure(s)"
exit "$failures"
