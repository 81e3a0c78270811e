//! Storage tiers of carpool's cache (being written).
