//! `edge-compare`'s parts: the policy as other tools' rulesets, the packet mix, a bounded raw
//! sender, and CPU accounting.

pub mod cpu;
pub mod mix;
pub mod rulesets;
pub mod sender;

/// Packets the namespace's IPv4 and IPv6 layers handed to TCP, UDP and ICMP (Ip InDelivers +
/// Ip6InDelivers): what got past every filter. Call from a thread inside the namespace.
pub fn delivered_packets() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read /proc/thread-self/net/snmp");
    let mut ip_lines = snmp.lines().filter(|l| l.starts_with("Ip: "));
    let (names, values) = (ip_lines.next().unwrap_or_default(), ip_lines.next().unwrap_or_default());
    let v4 = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InDelivers")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .expect("Ip InDelivers in /proc/net/snmp");
    let snmp6 = std::fs::read_to_string("/proc/thread-self/net/snmp6").unwrap_or_default();
    let v6 = snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Ip6InDelivers"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    v4 + v6
}
