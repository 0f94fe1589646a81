//! The policies the benchmarks scale over: the built-in Lync profile plus N rules.

use edge_ctl::profile;

/// The Lync profile plus `extra` rules on ports 10000..11999 (so that several rules share a port,
/// and the rule classes stay under the compiler's limit), whose remotes come from 48 sets that
/// together hold `extra` distinct prefixes (198.18.0.0/15 and 2001:db8:f::/48).
pub fn scaled_policy(extra: usize) -> String {
    let mut text = profile::render(&Default::default());
    if extra == 0 {
        return text;
    }
    // The profile uses a few remote sets of its own; 48 more stay under the limit of 64.
    let sets = 48.min(extra);
    let mut members: Vec<Vec<String>> = vec![Vec::new(); sets];
    for i in 0..extra {
        let p = if i % 4 == 3 {
            format!("\"2001:db8:f:{:x}::/64\"", i)
        } else {
            format!("\"198.{}.{}.{}/32\"", 18 + (i >> 16), (i >> 8) & 0xff, i & 0xff)
        };
        members[i % sets].push(p);
    }
    let mut sets_text = String::new();
    for (k, m) in members.iter().enumerate() {
        sets_text += &format!("partners{k} = [{}]\n", m.join(", "));
    }
    text = text.replacen("[sets]\n", &format!("[sets]\n{sets_text}"), 1);
    for i in 0..extra {
        text += &format!(
            "\n[[rule]]\nname = \"partner-{i}\"\nrole = \"external\"\ndirection = \"inbound\"\nprotocol = \"tcp\"\nports = {}\nlocal = \"access_edge\"\nremote = \"partners{}\"\n",
            10000 + (i % 2000),
            i % sets
        );
    }
    text
}
