//! Remap planning: what a change from one member table to another costs.
//!
//! Feed a sample of request targets to a [`Planner`]; it routes each one under
//! both tables and counts, per member, the share it gets and the URLs it keeps,
//! loses and gains. Members are matched across tables by name.

use crate::{RequestUri, Table};

/// One member's figures in a [`Plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    /// Member name.
    pub name: String,
    /// Configured weight (0 when the member is absent from that table).
    pub weight: u32,
    /// Share of the sample routed to it under this table.
    pub share: f64,
    /// Its weight as a share of the total weight (the ideal share).
    pub ideal: f64,
    /// Sampled URLs it owns under both tables.
    pub kept: u64,
    /// Sampled URLs it owned under OLD and another member owns under NEW.
    pub lost: u64,
    /// Sampled URLs it owns under NEW and another member owned under OLD.
    pub gained: u64,
}

/// The result of a plan: per member of either table, and totals.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// URLs sampled (routable ones only).
    pub samples: u64,
    /// URLs whose owner changes.
    pub moved: u64,
    /// Every member that appears in OLD or NEW: OLD's order, then NEW's additions.
    pub members: Vec<(Option<Flow>, Option<Flow>)>,
}

impl Plan {
    /// Fraction of sampled URLs whose owner changes.
    pub fn moved_fraction(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.moved as f64 / self.samples as f64
        }
    }
}

/// Accumulates a plan over a stream of request targets.
pub struct Planner<'a> {
    old: &'a Table,
    new: &'a Table,
    /// For each OLD member index: the NEW member index with the same name.
    old_to_new: Vec<Option<usize>>,
    old_count: Vec<u64>,
    new_count: Vec<u64>,
    kept_old: Vec<u64>,
    lost_old: Vec<u64>,
    gained_new: Vec<u64>,
    samples: u64,
    moved: u64,
}

impl<'a> Planner<'a> {
    /// Starts a plan from OLD to NEW.
    pub fn new(old: &'a Table, new: &'a Table) -> Self {
        let old_to_new = old
            .members()
            .iter()
            .map(|m| new.members().iter().position(|n| n.name == m.name))
            .collect();
        Planner {
            old,
            new,
            old_to_new,
            old_count: vec![0; old.len()],
            new_count: vec![0; new.len()],
            kept_old: vec![0; old.len()],
            lost_old: vec![0; old.len()],
            gained_new: vec![0; new.len()],
            samples: 0,
            moved: 0,
        }
    }

    /// Routes one target under both tables (every member alive).
    pub fn add(&mut self, req: &RequestUri) {
        let (Some(o), Some(n)) = (
            self.old.select(req, |_| true),
            self.new.select(req, |_| true),
        ) else {
            return;
        };
        self.samples += 1;
        self.old_count[o.index()] += 1;
        self.new_count[n.index()] += 1;
        if self.old_to_new[o.index()] == Some(n.index()) {
            self.kept_old[o.index()] += 1;
        } else {
            self.moved += 1;
            self.lost_old[o.index()] += 1;
            self.gained_new[n.index()] += 1;
        }
    }

    /// The plan so far.
    pub fn finish(&self) -> Plan {
        let share = |c: u64| {
            if self.samples == 0 {
                0.0
            } else {
                c as f64 / self.samples as f64
            }
        };
        let total = |t: &Table| {
            t.members()
                .iter()
                .map(|m| m.weight.max(1) as f64)
                .sum::<f64>()
        };
        let (old_total, new_total) = (total(self.old), total(self.new));
        let mut members = Vec::new();
        for (i, m) in self.old.members().iter().enumerate() {
            let old = Flow {
                name: m.name.clone(),
                weight: m.weight,
                share: share(self.old_count[i]),
                ideal: m.weight.max(1) as f64 / old_total,
                kept: self.kept_old[i],
                lost: self.lost_old[i],
                gained: 0,
            };
            let new = self.old_to_new[i].map(|j| self.new_flow(j, new_total, &share));
            members.push((Some(old), new));
        }
        for j in 0..self.new.len() {
            if !self.old_to_new.contains(&Some(j)) {
                members.push((None, Some(self.new_flow(j, new_total, &share))));
            }
        }
        Plan {
            samples: self.samples,
            moved: self.moved,
            members,
        }
    }

    fn new_flow(&self, j: usize, total: f64, share: &impl Fn(u64) -> f64) -> Flow {
        let m = &self.new.members()[j];
        let kept = self
            .old_to_new
            .iter()
            .position(|x| *x == Some(j))
            .map_or(0, |i| self.kept_old[i]);
        Flow {
            name: m.name.clone(),
            weight: m.weight,
            share: share(self.new_count[j]),
            ideal: m.weight.max(1) as f64 / total,
            kept,
            lost: 0,
            gained: self.gained_new[j],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Member, Mode};

    #[test]
    fn removing_a_member_in_hrw_moves_only_its_share() {
        let names = ["a", "b", "c", "d"];
        let old = Table::new(
            Mode::Hrw,
            names.iter().map(|n| Member::new(*n, 1)).collect(),
        )
        .unwrap();
        let new = Table::new(
            Mode::Hrw,
            names[..3].iter().map(|n| Member::new(*n, 1)).collect(),
        )
        .unwrap();
        let mut p = Planner::new(&old, &new);
        for i in 0..20_000 {
            p.add(&RequestUri::from_parts(
                "http",
                &format!("h{i}.example"),
                80,
                80,
                "/",
            ));
        }
        let plan = p.finish();
        let (d_old, d_new) = &plan.members[3];
        assert!(d_new.is_none());
        // exactly d's URLs move
        assert_eq!(plan.moved, d_old.as_ref().unwrap().lost);
        assert!(
            (plan.moved_fraction() - 0.25).abs() < 0.02,
            "{}",
            plan.moved_fraction()
        );
    }
}
