//! The document's scenario as a lab: Scaled Consolidated Edge behind a hardware load balancer.
//!
//! ```text
//!  client 192.0.2.50 ─┐                          ┌─ edge1 ext0 .21/.22/.23 ─ int0 198.51.100.21 ─┐
//!  partner 192.0.2.60 ┴─ br-inet [  HLB  ] br-perim ┴─ edge2 ext0 .31/.32/.33 ─ int0 198.51.100.22 ─┴─ br-int [HLB] ─ fe 198.51.100.100
//! ```
//!
//! The HLB namespace routes between three bridges and a link to the Front End/Director host and
//! holds the VIPs: external 203.0.113.10 (Access Edge), .11 (Web Conferencing Edge), .12 (A/V
//! Edge), internal 198.51.100.10 (and the same in 2001:db8::/32). nftables does what the
//! document asks of the HLB: DNAT from each VIP to the nodes in turn, SNAT to the VIP for the
//! Access and Web Conferencing Edge, no SNAT for A/V. Each node's default gateway is the Access
//! Edge VIP; internal networks are reached through persistent routes. edge-ctl runs on both
//! interfaces of both nodes.
//!
//! With `Placement::Perimeter` (issue 17) the nodes run nothing, and two Linux firewalls sit in
//! front of the pool, as in a real deployment, where the edge servers run Windows:
//!
//! ```text
//!  client, partner ─ isp (br-inet) ─ up0 [xfw] dn0 ─ h-up [HLB] br-perim ─ nodes' ext0
//!  fe ─ dn0 [ifw] up0 ─ h-ifw [HLB] br-int ─ nodes' int0
//! ```
//!
//! The external firewall (`xfw`) filters with `--role external` on up0, the internal one
//! (`ifw`) with `--role internal` on dn0: the NICs facing away from the pool. The transit links
//! are 192.0.2.128/30, 2001:db8:f::/64 and 198.51.100.64/30, 2001:db8:1:e::/64.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use edge_ctl::policy::{Placement, Policy, Role};
use edge_ctl::profile::{self, Addressing, Options, Row, Switch, Table, addr};

use crate::lab::Lab;
use crate::net::{Outcome, Servers, tcp_probe, udp_probe};

pub struct LyncLab {
    pub lab: Lab,
    pub client: String,
    pub partner: String,
    pub hlb: String,
    pub fe: String,
    /// Node `n` is `edges[n - 1]`.
    pub edges: Vec<String>,
    pub policy_file: PathBuf,
    pub policy: Policy,
    /// The switches the profile was rendered with.
    pub options: Options,
    /// With `Placement::Perimeter`: the external and the internal firewall's namespaces.
    pub firewalls: Option<[String; 2]>,
}

pub const CLIENT4: &str = "192.0.2.50";
pub const CLIENT6: &str = "2001:db8:c::50";
pub const FE4: &str = "198.51.100.100";
pub const FE6: &str = "2001:db8:1:f::100";

impl LyncLab {
    pub fn build(nodes: u8, options: Options) -> LyncLab {
        let perimeter = options.placement == Placement::Perimeter;
        let mut lab = Lab::new(if perimeter { "per" } else { "lync" });
        let hlb = lab.netns("hlb");
        let client = lab.netns("client");
        let partner = lab.netns("partner");
        let fe = lab.netns("fe");
        let edges: Vec<String> = (1..=nodes).map(|n| lab.netns(&format!("edge{n}"))).collect();
        let firewalls = perimeter.then(|| [lab.netns("xfw"), lab.netns("ifw")]);
        // Where the clients' bridge is: in the HLB, or behind the external firewall at the ISP.
        let isp = if perimeter { lab.netns("isp") } else { hlb.clone() };
        for router in [&hlb].into_iter().chain(firewalls.iter().flatten()) {
            lab.sysctl(router, "net.ipv4.ip_forward", "1");
            lab.sysctl(router, "net.ipv6.conf.all.forwarding", "1");
        }

        let bridges: &[(&str, &[&str])] = &[
            ("br-inet", &["192.0.2.1/24", "2001:db8:c::1/64"]),
            ("br-perim", &["203.0.113.1/24", "2001:db8:e::1/64"]),
            ("br-int", &["198.51.100.1/27", "2001:db8:1::1/64"]),
        ];
        for &(br, addrs) in bridges {
            let ns = if br == "br-inet" { &isp } else { &hlb };
            lab.ip(ns, &["link", "add", br, "type", "bridge"]);
            lab.ip(ns, &["link", "set", br, "up"]);
            // At the ISP the bridge is only a switch: the clients' gateway is the firewall.
            if ns == &hlb {
                for a in addrs {
                    lab.addr(ns, br, a);
                }
            }
        }
        for vip in [addr::ACCESS_VIP, addr::WEBCONF_VIP, addr::AV_VIP] {
            lab.addr(&hlb, "br-perim", &format!("{vip}/24"));
        }
        for vip in [addr::ACCESS_VIP6, addr::WEBCONF_VIP6, addr::AV_VIP6] {
            lab.addr(&hlb, "br-perim", &format!("{vip}/64"));
        }
        lab.addr(&hlb, "br-int", &format!("{}/27", addr::INTERNAL_VIP));
        lab.addr(&hlb, "br-int", &format!("{}/64", addr::INTERNAL_VIP6));

        // A host's link to a router (`far`: its namespace and device), on a bridge there or not.
        let host =
            |lab: &Lab, ns: &str, dev: &str, far: (&str, &str), br: Option<&str>, addrs: &[&str], gw: &[&str]| {
                lab.veth((ns, dev), far);
                if let Some(br) = br {
                    lab.ip(far.0, &["link", "set", far.1, "master", br]);
                }
                for a in addrs {
                    lab.addr(ns, dev, a);
                }
                for g in gw {
                    lab.ip(ns, &["route", "add", "default", "via", g]);
                }
            };
        let inet_gw = &["192.0.2.1", "2001:db8:c::1"][..];
        host(&lab, &client, "cli0", (&isp, "h-cli"), Some("br-inet"), &["192.0.2.50/24", "2001:db8:c::50/64"], inet_gw);
        host(
            &lab,
            &partner,
            "par0",
            (&isp, "h-par"),
            Some("br-inet"),
            &["192.0.2.60/24", "2001:db8:c::60/64"],
            inet_gw,
        );
        // The Front End/Director host's gateway: the HLB, or the internal firewall.
        let fe_router = match &firewalls {
            Some([_, ifw]) => (ifw.as_str(), "dn0"),
            None => (hlb.as_str(), "h-fe"),
        };
        let fe_addrs = &["198.51.100.100/27", "2001:db8:1:f::100/64"][..];
        host(&lab, &fe, "fe0", fe_router, None, fe_addrs, &["198.51.100.97", "2001:db8:1:f::1"]);
        lab.addr(fe_router.0, fe_router.1, "198.51.100.97/27");
        lab.addr(fe_router.0, fe_router.1, "2001:db8:1:f::1/64");
        if let Some([xfw, ifw]) = &firewalls {
            // The external firewall: the clients' gateway on up0, the HLB behind dn0.
            lab.veth((xfw, "up0"), (&isp, "h-xfw"));
            lab.ip(&isp, &["link", "set", "h-xfw", "master", "br-inet"]);
            lab.addr(xfw, "up0", "192.0.2.1/24");
            lab.addr(xfw, "up0", "2001:db8:c::1/64");
            let (v4, v6) = (["192.0.2.129/30", "192.0.2.130/30"], ["2001:db8:f::1/64", "2001:db8:f::2/64"]);
            transit(&lab, (xfw, "dn0"), (&hlb, "h-up"), v4, v6);
            routes(&lab, xfw, &[("203.0.113.0/24", "192.0.2.130"), ("2001:db8:e::/64", "2001:db8:f::2")]);
            routes(&lab, &hlb, &[("default", "192.0.2.129"), ("default", "2001:db8:f::1")]);
            // The internal firewall: the Front End's gateway on dn0, the HLB behind up0.
            let (v4, v6) = (["198.51.100.65/30", "198.51.100.66/30"], ["2001:db8:1:e::1/64", "2001:db8:1:e::2/64"]);
            transit(&lab, (ifw, "up0"), (&hlb, "h-ifw"), v4, v6);
            routes(&lab, ifw, &[("198.51.100.0/27", "198.51.100.66"), ("2001:db8:1::/64", "2001:db8:1:e::2")]);
            routes(&lab, &hlb, &[("198.51.100.96/27", "198.51.100.65"), ("2001:db8:1:f::/64", "2001:db8:1:e::1")]);
        }

        for (i, ns) in edges.iter().enumerate() {
            let n = i as u8 + 1;
            let ext: Vec<String> = addr::node_external(n)
                .iter()
                .map(|a| format!("{a}/24"))
                .chain(addr::node_external6(n).iter().map(|a| format!("{a}/64")))
                .collect();
            let ext: Vec<&str> = ext.iter().map(String::as_str).collect();
            // The HLB's Access Edge VIP is the default gateway of the edge's external interface.
            let gw = &[addr::ACCESS_VIP, addr::ACCESS_VIP6][..];
            host(&lab, ns, "ext0", (&hlb, &format!("h-e{n}x")), Some("br-perim"), &ext, gw);
            let int = [format!("{}/27", addr::node_internal(n)), format!("{}/64", addr::node_internal6(n))];
            host(&lab, ns, "int0", (&hlb, &format!("h-e{n}i")), Some("br-int"), &[&int[0], &int[1]], &[]);
            // Persistent routes to the internal networks; no default gateway inside.
            lab.ip(ns, &["route", "add", "198.51.100.0/24", "via", "198.51.100.1"]);
            lab.ip(ns, &["route", "add", "2001:db8:1::/48", "via", "2001:db8:1::1"]);
        }
        let inet_if = if perimeter { "h-up" } else { "br-inet" };
        let fe_if = if perimeter { "h-ifw" } else { "h-fe" };
        load_nft(&hlb, nodes, inet_if, fe_if);

        let policy_text = profile::render(&Options { nodes, addressing: Addressing::Documentation, ..options });
        let policy = edge_ctl::policy::parse(&policy_text, "lync.toml").expect("template parses");
        let policy_file = std::env::temp_dir().join(format!("edge-lync-{}-{}.toml", std::process::id(), hlb));
        std::fs::write(&policy_file, policy_text).expect("write policy");
        LyncLab { lab, client, partner, hlb, fe, edges, policy_file, policy, options, firewalls }
    }

    /// The filtered interfaces of a role, as (namespace, interface): both interfaces of every
    /// node, or the firewalls' NICs facing away from the pool.
    pub fn filters(&self, role: Role) -> Vec<(String, &'static str)> {
        match (&self.firewalls, role) {
            (Some([xfw, _]), Role::External) => vec![(xfw.clone(), "up0")],
            (Some([_, ifw]), Role::Internal) => vec![(ifw.clone(), "dn0")],
            (None, Role::External) => self.edges.iter().map(|ns| (ns.clone(), "ext0")).collect(),
            (None, Role::Internal) => self.edges.iter().map(|ns| (ns.clone(), "int0")).collect(),
        }
    }

    /// `edge-ctl attach` on every filtered interface, with its role.
    pub fn attach_all(&self) {
        let policy = self.policy_file.to_str().unwrap();
        for role in Role::ALL {
            for (ns, iface) in self.filters(role) {
                self.lab.edge_ctl_ok(&ns, &["attach", iface, "--role", role.as_str(), "--policy", policy]);
            }
        }
    }

    /// Renders the profile with other switches (the lab's placement kept) and rolls it out with
    /// `edge-ctl reload` on every filtered interface (no program is loaded again: the lab keeps
    /// its attachments).
    pub fn reload_all(&mut self, options: Options) {
        let nodes = self.edges.len() as u8;
        let options = Options { placement: self.options.placement, ..options };
        let text = profile::render(&Options { nodes, addressing: Addressing::Documentation, ..options });
        self.policy = edge_ctl::policy::parse(&text, "lync.toml").expect("template parses");
        std::fs::write(&self.policy_file, text).expect("write policy");
        self.options = options;
        let policy = self.policy_file.to_str().unwrap();
        for role in Role::ALL {
            for (ns, iface) in self.filters(role) {
                self.lab.edge_ctl_ok(&ns, &["reload", iface, "--policy", policy]);
            }
        }
    }

    /// Servers on every node for every probed port.
    pub fn servers(&self, probes: &[Probe]) -> Vec<Servers> {
        let mut tcp: Vec<u16> = probes.iter().filter(|p| !p.udp).map(|p| p.to.port()).collect();
        let mut udp: Vec<u16> = probes.iter().filter(|p| p.udp).map(|p| p.to.port()).collect();
        for v in [&mut tcp, &mut udp] {
            v.sort();
            v.dedup();
        }
        self.edges.iter().map(|ns| Servers::start(ns, &tcp, &udp)).collect()
    }

    /// Packets counted for `rule` over the filtered interfaces of `role`.
    pub fn rule_total(&self, role: Role, rule: &str) -> u64 {
        self.filters(role).iter().map(|(ns, iface)| crate::lab::rule_packets(&self.lab.stats(ns, iface), rule)).sum()
    }

    pub fn drop_total(&self, role: Role, reason: &str) -> u64 {
        self.filters(role).iter().map(|(ns, iface)| crate::lab::drop_packets(&self.lab.stats(ns, iface), reason)).sum()
    }
}

impl Drop for LyncLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.policy_file);
    }
}

fn node_map(nodes: u8, pick: impl Fn(u8) -> String) -> String {
    let items: Vec<String> = (1..=nodes).map(|n| format!("{} : {}", n - 1, pick(n))).collect();
    format!("numgen inc mod {nodes} map {{ {} }}", items.join(", "))
}

fn node_set(nodes: u8, pick: impl Fn(u8) -> String) -> String {
    let items: Vec<String> = (1..=nodes).map(pick).collect();
    format!("{{ {} }}", items.join(", "))
}

/// `ip route add DST via GW` in a namespace, for each pair.
fn routes(lab: &Lab, ns: &str, list: &[(&str, &str)]) {
    for (dst, via) in list {
        lab.ip(ns, &["route", "add", dst, "via", via]);
    }
}

/// A point-to-point link between two routers, with an address of each family at each end.
fn transit(lab: &Lab, a: (&str, &str), b: (&str, &str), v4: [&str; 2], v6: [&str; 2]) {
    lab.veth(a, b);
    for (end, (four, six)) in [a, b].into_iter().zip(v4.into_iter().zip(v6)) {
        lab.addr(end.0, end.1, four);
        lab.addr(end.0, end.1, six);
    }
}

/// The HLB: DNAT from each VIP to the nodes in turn; SNAT to the VIP for Access and Web
/// Conferencing Edge only, and for what the nodes' Access Edge opens toward federated partners
/// (SIP, XMPP: the document's source for those rows is the VIP); no route from the internet side
/// (`inet_if`) to the internal networks (`fe_if` leads to the Front End/Director).
fn load_nft(hlb: &str, nodes: u8, inet_if: &str, fe_if: &str) {
    let ext = |k: usize| move |n: u8| addr::node_external(n)[k].clone();
    let ext6 = |k: usize| move |n: u8| addr::node_external6(n)[k].clone();
    let mut pre = Vec::new();
    let mut post = Vec::new();
    for (fam, vips, pick, pick_int) in [
        (
            "ip",
            [addr::ACCESS_VIP, addr::WEBCONF_VIP, addr::AV_VIP, addr::INTERNAL_VIP],
            false,
            addr::node_internal as fn(u8) -> String,
        ),
        (
            "ip6",
            [addr::ACCESS_VIP6, addr::WEBCONF_VIP6, addr::AV_VIP6, addr::INTERNAL_VIP6],
            true,
            addr::node_internal6 as fn(u8) -> String,
        ),
    ] {
        let node = |k: usize| {
            if pick { node_map(nodes, ext6(k)) } else { node_map(nodes, ext(k)) }
        };
        let set = |k: usize| {
            if pick { node_set(nodes, ext6(k)) } else { node_set(nodes, ext(k)) }
        };
        pre.push(format!("{fam} daddr {} tcp dport {{ 443, 5061, 5269 }} dnat {fam} to {}", vips[0], node(0)));
        pre.push(format!("{fam} daddr {} tcp dport 443 dnat {fam} to {}", vips[1], node(1)));
        pre.push(format!("{fam} daddr {} tcp dport 443 dnat {fam} to {}", vips[2], node(2)));
        pre.push(format!("{fam} daddr {} udp dport 3478 dnat {fam} to {}", vips[2], node(2)));
        pre.push(format!(
            "{fam} daddr {} tcp dport {{ 443, 5061, 5062 }} dnat {fam} to {}",
            vips[3],
            node_map(nodes, pick_int)
        ));
        pre.push(format!("{fam} daddr {} udp dport 3478 dnat {fam} to {}", vips[3], node_map(nodes, pick_int)));
        post.push(format!(
            "ct status dnat {fam} daddr {} tcp dport {{ 443, 5061, 5269 }} snat {fam} to {}",
            set(0),
            vips[0]
        ));
        post.push(format!("ct status dnat {fam} daddr {} tcp dport 443 snat {fam} to {}", set(1), vips[1]));
        post.push(format!(
            "oifname \"{inet_if}\" {fam} saddr {} tcp dport {{ 5061, 5269 }} snat {fam} to {}",
            set(0),
            vips[0]
        ));
    }
    let ruleset = format!(
        "table inet hlb {{\n\
         chain prerouting {{ type nat hook prerouting priority dstnat;\n{}\n}}\n\
         chain postrouting {{ type nat hook postrouting priority srcnat;\n{}\n}}\n\
         chain forward {{ type filter hook forward priority filter;\n\
         iifname \"{inet_if}\" oifname {{ \"br-int\", \"{fe_if}\" }} drop\n}}\n}}\n",
        pre.join("\n"),
        post.join("\n")
    );
    let path = std::env::temp_dir().join(format!("edge-lync-{hlb}.nft"));
    std::fs::write(&path, ruleset).expect("write nft ruleset");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", hlb, "nft", "-f"])
        .arg(&path)
        .output()
        .expect("run nft");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
}

/// One probe of the conformance run.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The table row this probe exercises, or None for a port outside the matrix.
    pub row: Option<&'static Row>,
    pub role: Role,
    pub what: String,
    pub from: String,
    pub to: SocketAddr,
    pub udp: bool,
    pub expect_pass: bool,
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// The ports a row's probes use: a single port, or both ends of a range.
fn row_ports(row: &Row) -> Vec<u16> {
    match row.ports.split_once('-') {
        Some((a, b)) => vec![a.parse().unwrap(), b.parse().unwrap()],
        None => vec![row.ports.parse().unwrap()],
    }
}

impl LyncLab {
    /// Every inbound row of the four tables (over both families and, for node rows, every
    /// node), then ports outside the matrix on each interface role.
    pub fn probes(&self) -> Vec<Probe> {
        let nodes = self.edges.len() as u8;
        let mut out = Vec::new();
        for row in profile::ROWS.iter().filter(|r| r.direction == "inbound") {
            // What the document says of the row under these switches, not what the rendered
            // policy says: the rendering is under test too.
            let enabled = match row.switch {
                Switch::Always => true,
                Switch::Ocs2007 => self.options.ocs2007,
                Switch::Xmpp => self.options.xmpp,
            };
            let rendered = self.policy.rules.iter().any(|r| r.name == row.name && r.enabled);
            assert_eq!(rendered, enabled, "row {}: the rendered policy's switch", row.name);
            let service = ["access_edge", "webconf_edge", "av_edge"].iter().position(|s| *s == row.local);
            let mut targets: Vec<(String, String)> = Vec::new(); // (from ns, address)
            match row.table {
                Table::ExternalNode => {
                    for n in 1..=nodes {
                        let k = service.expect("external rows name a service");
                        targets.push((self.client.clone(), addr::node_external(n)[k].clone()));
                        targets.push((self.client.clone(), addr::node_external6(n)[k].clone()));
                    }
                }
                Table::ExternalVip => {
                    let k = service.expect("external rows name a service");
                    let vips = [
                        [addr::ACCESS_VIP, addr::ACCESS_VIP6],
                        [addr::WEBCONF_VIP, addr::WEBCONF_VIP6],
                        [addr::AV_VIP, addr::AV_VIP6],
                    ];
                    for v in vips[k] {
                        targets.push((self.client.clone(), v.to_string()));
                    }
                }
                Table::InternalNode => {
                    for n in 1..=nodes {
                        targets.push((self.fe.clone(), addr::node_internal(n)));
                        targets.push((self.fe.clone(), addr::node_internal6(n)));
                    }
                }
                Table::InternalVip => {
                    targets.push((self.fe.clone(), addr::INTERNAL_VIP.to_string()));
                    targets.push((self.fe.clone(), addr::INTERNAL_VIP6.to_string()));
                }
            }
            for (from, ip) in targets {
                for port in row_ports(row) {
                    out.push(Probe {
                        row: Some(row),
                        role: if row.role() == "external" { Role::External } else { Role::Internal },
                        what: format!("{} {}/{}", row.name, row.protocol, port),
                        from: from.clone(),
                        to: sock(&ip, port),
                        udp: row.protocol == "udp",
                        expect_pass: enabled,
                    });
                }
            }
        }
        let outside =
            |role: Role, from: &str, ips: [String; 2], ports: &[(bool, u16)], why: &str, out: &mut Vec<Probe>| {
                for ip in &ips {
                    for &(udp, port) in ports {
                        out.push(Probe {
                            row: None,
                            role,
                            what: format!("{why} {}/{port}", if udp { "udp" } else { "tcp" }),
                            from: from.to_string(),
                            to: sock(ip, port),
                            udp,
                            expect_pass: false,
                        });
                    }
                }
            };
        let outside_ports =
            [(false, 22), (false, 80), (false, 3389), (false, 5060), (false, 8080), (true, 53), (true, 5000)];
        let [a4, w4, _] = addr::node_external(1);
        let [a6, w6, _] = addr::node_external6(1);
        outside(Role::External, &self.client, [a4.clone(), a6.clone()], &outside_ports, "outside the matrix", &mut out);
        // Access and Web Conferencing traffic must come through the HLB (SNAT to the VIP): the
        // same ports straight to the node's address are refused.
        outside(
            Role::External,
            &self.client,
            [a4, a6],
            &[(false, 443), (false, 5061)],
            "bypassing the HLB's SNAT",
            &mut out,
        );
        outside(Role::External, &self.client, [w4, w6], &[(false, 443)], "bypassing the HLB's SNAT", &mut out);
        let internal_outside =
            [(false, 80), (false, 3389), (false, 5060), (false, 5269), (false, 8080), (true, 53), (true, 5000)];
        outside(
            Role::Internal,
            &self.fe,
            [addr::node_internal(1), addr::node_internal6(1)],
            &internal_outside,
            "outside the matrix",
            &mut out,
        );
        out
    }
}

/// Probes every inbound row and the ports around them under the lab's current policy; every
/// count is taken as a difference, so the same lab serves several policies.
pub fn conformance(lab: &LyncLab) {
    let probes = lab.probes();
    // The rule that counts each row that must pass, per role, and the drops per role, before.
    let mut rows: BTreeMap<(String, Role), u64> = BTreeMap::new();
    for p in probes.iter().filter(|p| p.expect_pass) {
        let rule = counting_rule(&lab.policy, p.row.unwrap().name);
        rows.entry((rule.clone(), p.role)).or_insert_with(|| lab.rule_total(p.role, &rule));
    }
    let drops: BTreeMap<Role, u64> = Role::ALL.iter().map(|r| (*r, lab.drop_total(*r, "policy-default"))).collect();
    let _servers = lab.servers(&probes);
    let outcomes = run_probes(&probes);

    let mut mismatches = Vec::new();
    for (p, o) in probes.iter().zip(&outcomes) {
        let passed = *o == Outcome::Answered;
        if passed != p.expect_pass {
            mismatches.push(format!(
                "{} -> {}: expected {}, got {o:?}",
                p.what,
                p.to,
                if p.expect_pass { "pass" } else { "drop" }
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} probes disagree with the matrix:\n{}",
        mismatches.len(),
        probes.len(),
        mismatches.join("\n")
    );
    // Every row that passed was counted by its rule (or the earlier rule it duplicates).
    for ((rule, role), before) in &rows {
        assert!(lab.rule_total(*role, rule) > *before, "rule {rule} ({role}) counted nothing");
    }
    // Every denied probe was dropped by the filter, not lost elsewhere: at least one
    // policy-default drop per denied probe on that side.
    for role in Role::ALL {
        let denied = probes.iter().filter(|p| !p.expect_pass && p.role == role).count() as u64;
        let dropped = lab.drop_total(role, "policy-default") - drops[&role];
        assert!(dropped >= denied, "{role}: {dropped} policy-default drops for {denied} denied probes");
    }
}

/// Runs probes in parallel (each has its own timeout) and returns the outcomes in order.
pub fn run_probes(probes: &[Probe]) -> Vec<Outcome> {
    let handles: Vec<_> = probes
        .iter()
        .cloned()
        .map(|p| {
            std::thread::spawn(move || {
                let wait = Duration::from_millis(if p.expect_pass { 3000 } else { 700 });
                if p.udp { udp_probe(&p.from, p.to, wait) } else { tcp_probe(&p.from, p.to, wait) }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("probe thread")).collect()
}

/// The rule that counts a row's packets: the row's own, or the earlier rule it duplicates.
pub fn counting_rule(policy: &Policy, row: &str) -> String {
    edge_ctl::analysis::findings(policy)
        .into_iter()
        .find(|f| f.rule == row && f.kind == edge_ctl::analysis::Kind::Duplicate)
        .and_then(|f| f.by)
        .unwrap_or_else(|| row.to_string())
}
