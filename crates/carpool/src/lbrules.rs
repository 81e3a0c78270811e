//! Layer 1 for separately run instances: kernel NAT rules that spread new
//! connections to one port over several local instances, for iptables
//! (`-m statistic`) or nftables (`numgen`).
//!
//! The Squid wiki page gives every REDIRECT rule probability 0.25. A rule only
//! sees the connections that earlier rules let through, so that yields 25%,
//! 18.75%, 14.06% to the redirected instances and 42.19% to the port itself.
//! The correct chain gives rule i (0-based) of n the probability
//! w_i / (w_i + … + w_n-1): 1/4, 1/3, 1/2 for four equal instances.

use std::fmt::Write as _;

/// The instances and their weights, the public port's own instance last.
#[derive(Clone, Debug, PartialEq)]
pub struct Spread {
    /// The port clients connect to.
    pub port: u16,
    /// (instance port, weight) in rule order.
    pub instances: Vec<(u16, u32)>,
    /// Netfilter chain (PREROUTING for clients on other hosts, OUTPUT for local ones).
    pub chain: String,
}

/// Why a spread cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpreadError {
    /// No instance given.
    #[error("--instances needs at least one port")]
    NoInstances,
    /// Weights do not match the instances.
    #[error("--weights has {0} values for {1} instances")]
    WeightCount(usize, usize),
    /// A zero weight.
    #[error("weights must be at least 1")]
    ZeroWeight,
    /// An instance listed twice.
    #[error("instance port {0} is listed twice")]
    Duplicate(u16),
    /// An unknown chain.
    #[error("chain must be PREROUTING or OUTPUT, not {0:?}")]
    Chain(String),
}

impl Spread {
    /// Builds the spread; the instance on `port` itself (if any) goes last,
    /// since it takes what no rule redirected.
    pub fn new(
        port: u16,
        instances: &[u16],
        weights: Option<&[u32]>,
        chain: &str,
    ) -> Result<Spread, SpreadError> {
        if instances.is_empty() {
            return Err(SpreadError::NoInstances);
        }
        let weights: Vec<u32> = match weights {
            Some(w) if w.len() != instances.len() => {
                return Err(SpreadError::WeightCount(w.len(), instances.len()))
            }
            Some(w) => w.to_vec(),
            None => vec![1; instances.len()],
        };
        if weights.contains(&0) {
            return Err(SpreadError::ZeroWeight);
        }
        for (i, p) in instances.iter().enumerate() {
            if instances[..i].contains(p) {
                return Err(SpreadError::Duplicate(*p));
            }
        }
        if chain != "PREROUTING" && chain != "OUTPUT" {
            return Err(SpreadError::Chain(chain.to_string()));
        }
        let mut list: Vec<(u16, u32)> = instances.iter().copied().zip(weights).collect();
        if let Some(i) = list.iter().position(|(p, _)| *p == port) {
            let own = list.remove(i);
            list.push(own);
        }
        Ok(Spread {
            port,
            instances: list,
            chain: chain.to_string(),
        })
    }

    /// The probability each rule is given (the last instance has no rule of
    /// its own when it is the port itself, and probability 1 otherwise).
    pub fn probabilities(&self) -> Vec<f64> {
        let mut left: u64 = self.instances.iter().map(|(_, w)| *w as u64).sum();
        self.instances
            .iter()
            .map(|(_, w)| {
                let p = *w as f64 / left as f64;
                left -= *w as u64;
                p
            })
            .collect()
    }

    /// The iptables argument lists (`-A` to add, `-D` to delete).
    pub fn iptables(&self, op: &str) -> Vec<Vec<String>> {
        let probs = self.probabilities();
        let n = self.instances.len();
        let mut rules = Vec::new();
        for (i, ((inst, _), p)) in self.instances.iter().zip(&probs).enumerate() {
            let last = i + 1 == n;
            if last && *inst == self.port {
                break; // what is left stays on the port itself
            }
            let mut r: Vec<String> = [
                "-t",
                "nat",
                op,
                &self.chain,
                "-p",
                "tcp",
                "--dport",
                &self.port.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if self.chain == "OUTPUT" {
                r.extend(["-o", "lo"].map(String::from));
            }
            if !last {
                r.extend(
                    ["-m", "statistic", "--mode", "random", "--probability"].map(String::from),
                );
                r.push(format!("{p:.10}"));
            }
            r.extend(["-j", "REDIRECT", "--to-ports"].map(String::from));
            r.push(inst.to_string());
            rules.push(r);
        }
        rules
    }

    /// The nftables ruleset (a table of its own, `carpool_lb`).
    pub fn nftables(&self) -> String {
        let total: u64 = self.instances.iter().map(|(_, w)| *w as u64).sum();
        let mut map = Vec::new();
        let mut at = 0u64;
        for (inst, w) in &self.instances {
            let end = at + *w as u64 - 1;
            map.push(if end == at {
                format!("{at} : {inst}")
            } else {
                format!("{at}-{end} : {inst}")
            });
            at = end + 1;
        }
        let (hook, prio) = if self.chain == "OUTPUT" {
            ("output", "-100")
        } else {
            ("prerouting", "dstnat")
        };
        format!(
            "table ip carpool_lb {{\n    chain {hook} {{\n        type nat hook {hook} priority {prio}; policy accept;\n        tcp dport {} ct state new redirect to : numgen random mod {total} map {{ {} }}\n    }}\n}}\n",
            self.port,
            map.join(", ")
        )
    }

    /// The share of new connections each instance gets (what the rules produce).
    pub fn shares(&self) -> Vec<(u16, f64)> {
        let mut left = 1.0;
        let probs = self.probabilities();
        self.instances
            .iter()
            .zip(probs)
            .map(|((inst, _), p)| {
                let s = left * p;
                left -= s;
                (*inst, s)
            })
            .collect()
    }

    /// A comment block explaining the rules and the wiki page's skew.
    pub fn explanation(&self) -> String {
        let n = self.instances.len();
        let mut out = format!(
            "# carpool lb-rules: spread new connections to port {} over {} instances.\n\
             # Rule i of the chain only sees the connections earlier rules did not take,\n\
             # so it gets probability w_i / (w_i + ... + w_last), here: ",
            self.port, n
        );
        let probs: Vec<String> = self
            .probabilities()
            .iter()
            .take(n.saturating_sub(1))
            .map(|p| format!("{p:.4}"))
            .collect();
        out.push_str(&if probs.is_empty() {
            "-".into()
        } else {
            probs.join(", ")
        });
        out.push_str(".\n# Resulting shares: ");
        let shares: Vec<String> = self
            .shares()
            .iter()
            .map(|(i, s)| format!("{i} {:.2}%", s * 100.0))
            .collect();
        out.push_str(&shares.join(", "));
        // The wiki page: a rule of probability 0.25 for every instance but
        // the one on the port itself; what no rule takes stays on the port.
        let own = self.instances.last().is_some_and(|(p, _)| *p == self.port);
        let redirected = if own {
            &self.instances[..n - 1]
        } else {
            &self.instances[..]
        };
        if !redirected.is_empty() {
            let mut left = 1.0f64;
            let mut wiki = Vec::new();
            for (inst, _) in redirected {
                let s = left * 0.25;
                left -= s;
                wiki.push(format!("{inst} {:.2}%", s * 100.0));
            }
            let _ = write!(
                out,
                ".\n# The Squid wiki's rules (probability 0.25 on each) would give: {}, and {:.2}% stay on {}{}",
                wiki.join(", "),
                left * 100.0,
                self.port,
                if own { "" } else { ", where no instance listens (refused)" }
            );
        }
        out.push_str(".\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_equal_instances() {
        let s = Spread::new(3128, &[3128, 3129, 3130, 3131], None, "PREROUTING").unwrap();
        assert_eq!(
            s.instances.iter().map(|i| i.0).collect::<Vec<_>>(),
            vec![3129, 3130, 3131, 3128]
        );
        let p = s.probabilities();
        assert!(
            (p[0] - 0.25).abs() < 1e-12
                && (p[1] - 1.0 / 3.0).abs() < 1e-12
                && (p[2] - 0.5).abs() < 1e-12
        );
        for (_, share) in s.shares() {
            assert!((share - 0.25).abs() < 1e-12);
        }
        let rules = s.iptables("-A");
        assert_eq!(rules.len(), 3, "the port's own instance needs no rule");
        assert_eq!(
            rules[1].join(" "),
            "-t nat -A PREROUTING -p tcp --dport 3128 -m statistic --mode random --probability 0.3333333333 -j REDIRECT --to-ports 3130"
        );
        let text = s.explanation();
        assert!(
            text.contains("25.00%, 3130 18.75%, 3131 14.06%, and 42.19% stay on 3128"),
            "{text}"
        );
    }

    #[test]
    fn weights_and_a_port_without_its_own_instance() {
        let s = Spread::new(80, &[8001, 8002], Some(&[3, 1]), "OUTPUT").unwrap();
        let shares = s.shares();
        assert!((shares[0].1 - 0.75).abs() < 1e-12 && (shares[1].1 - 0.25).abs() < 1e-12);
        let rules = s.iptables("-D");
        assert_eq!(rules.len(), 2);
        assert!(
            rules[1]
                .join(" ")
                .ends_with("-o lo -j REDIRECT --to-ports 8002"),
            "{:?}",
            rules[1]
        );
        assert!(s
            .nftables()
            .contains("numgen random mod 4 map { 0-2 : 8001, 3 : 8002 }"));
        // the wiki's comparison: every instance has a 0.25 rule, and what is
        // left stays on port 80, which no instance serves
        let text = Spread::new(80, &[8001, 8002, 8003], None, "OUTPUT")
            .unwrap()
            .explanation();
        assert!(
            text.contains("would give: 8001 25.00%, 8002 18.75%, 8003 14.06%, and 42.19% stay on 80, where no instance listens (refused)."),
            "{text}"
        );
        assert!(Spread::new(80, &[], None, "OUTPUT").is_err());
        assert!(Spread::new(80, &[1, 1], None, "OUTPUT").is_err());
        assert!(Spread::new(80, &[1, 2], Some(&[1]), "OUTPUT").is_err());
        assert!(Spread::new(80, &[1], None, "INPUT").is_err());
    }
}
