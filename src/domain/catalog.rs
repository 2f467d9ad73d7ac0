//! The event catalog (data in `config/event-types.toml`) and subscription filters.

use serde::{Deserialize, Serialize};

const CATALOG_TOML: &str = include_str!("../../config/event-types.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Category {
    pub name: String,
    pub events: Vec<String>,
}

/// Every event type a webhook can subscribe to, in catalog order.
#[derive(Debug, Clone)]
pub struct Catalog {
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct CatalogFile {
    category: Vec<Category>,
}

impl Catalog {
    /// The built-in catalog. It is checked by a unit test, so a broken file fails the build's
    /// tests rather than a running worker.
    pub fn builtin() -> Self {
        Self::from_toml(CATALOG_TOML).unwrap_or_else(|e| panic!("config/event-types.toml: {e}"))
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: CatalogFile = toml_from_str(text)?;
        Ok(Self {
            categories: file.category,
        })
    }

    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// Full names, `category.event`, in catalog order.
    pub fn event_types(&self) -> impl Iterator<Item = String> + '_ {
        self.categories
            .iter()
            .flat_map(|c| c.events.iter().map(move |e| format!("{}.{e}", c.name)))
    }

    /// Every entry a subscription's `events` may hold: each event type, then `category.*`
    /// for each category.
    pub fn filters(&self) -> impl Iterator<Item = String> + '_ {
        let categories = self.categories.iter().map(|c| format!("{}.*", c.name));
        self.event_types().chain(categories)
    }

    pub fn contains(&self, event_type: &str) -> bool {
        event_type.split_once('.').is_some_and(|(category, event)| {
            self.categories
                .iter()
                .any(|c| c.name == category && c.events.iter().any(|e| e == event))
        })
    }

    fn has_category(&self, category: &str) -> bool {
        self.categories.iter().any(|c| c.name == category)
    }

    /// Parses one entry of a subscription's `events`: a known type or `category.*`.
    pub fn parse_filter(&self, entry: &str) -> Result<EventFilter, FilterError> {
        if let Some(category) = entry.strip_suffix(".*") {
            return if self.has_category(category) {
                Ok(EventFilter::Category(category.to_owned()))
            } else {
                Err(FilterError::UnknownCategory(entry.to_owned()))
            };
        }
        if self.contains(entry) {
            Ok(EventFilter::Exact(entry.to_owned()))
        } else {
            Err(FilterError::UnknownEventType(entry.to_owned()))
        }
    }
}

fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    #[error("unknown event category in {0:?}")]
    UnknownCategory(String),
}

/// One entry of a subscription's event list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    Exact(String),
    /// `deal.*`: every event of the category, including types added to the catalog later.
    Category(String),
}

impl EventFilter {
    /// A stored entry, checked against the catalog when it was written. Not checked again:
    /// a type since removed from the catalog stays listed, and never matches a new event.
    pub fn from_stored(entry: &str) -> Self {
        match entry.strip_suffix(".*") {
            Some(category) => EventFilter::Category(category.to_owned()),
            None => EventFilter::Exact(entry.to_owned()),
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventFilter::Exact(t) => t == event_type,
            EventFilter::Category(c) => category_of(event_type) == Some(c.as_str()),
        }
    }
}

/// As written in a webhook's `events`: `deal.won`, or `deal.*`.
impl std::fmt::Display for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventFilter::Exact(event_type) => f.write_str(event_type),
            EventFilter::Category(category) => write!(f, "{category}.*"),
        }
    }
}

fn category_of(event_type: &str) -> Option<&str> {
    event_type.split_once('.').map(|(category, _)| category)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_filter_is_accepted_and_covers_types_and_categories() {
        let catalog = Catalog::builtin();
        let filters: Vec<_> = catalog.filters().collect();
        assert_eq!(filters.len(), 25 + catalog.categories().len());
        assert!(filters.contains(&"deal.*".to_owned()));
        assert!(filters.contains(&"deal.won".to_owned()));
        for filter in &filters {
            assert!(catalog.parse_filter(filter).is_ok(), "{filter}");
        }
    }

    #[test]
    fn builtin_catalog_ships_the_listed_types() {
        // The catalog ships exactly the 25 types users are told of (config/event-types.toml;
        // docs/architecture.md, "Choices behind the design").
        let catalog = Catalog::builtin();
        let types: Vec<_> = catalog.event_types().collect();
        assert_eq!(types.len(), 25);
        assert_eq!(types[0], "lead.created");
        assert!(types.contains(&"contact.portal_user_created".to_owned()));
        assert!(types.contains(&"activity.note_created".to_owned()));
        assert_eq!(catalog.categories().len(), 6);
    }

    #[test]
    fn filters_parse_known_types_and_category_wildcards() {
        let catalog = Catalog::builtin();
        assert_eq!(
            catalog.parse_filter("deal.won"),
            Ok(EventFilter::Exact("deal.won".into()))
        );
        assert_eq!(
            catalog.parse_filter("deal.*"),
            Ok(EventFilter::Category("deal".into()))
        );
        assert!(matches!(
            catalog.parse_filter("deal.exploded"),
            Err(FilterError::UnknownEventType(_))
        ));
        assert!(matches!(
            catalog.parse_filter("boat.*"),
            Err(FilterError::UnknownCategory(_))
        ));
        assert!(catalog.parse_filter("*").is_err());
        assert!(catalog.parse_filter("").is_err());
    }

    #[test]
    fn matching_is_exact_or_by_category() {
        let exact = EventFilter::Exact("deal.won".into());
        let wildcard = EventFilter::Category("deal".into());
        assert!(exact.matches("deal.won"));
        assert!(!exact.matches("deal.lost"));
        assert!(wildcard.matches("deal.lost"));
        assert!(!wildcard.matches("dealer.lost"));
        assert!(!wildcard.matches("lead.created"));
        for (entry, event_type, expected) in [
            ("deal.won", "deal.won", true),
            ("deal.won", "deal.lost", false),
            ("deal.*", "deal.lost", true),
            ("deal.*", "dealer.lost", false),
            ("deal.*", "lead.created", false),
            ("deal.*", "deal", false),
        ] {
            let filter = EventFilter::from_stored(entry);
            assert_eq!(filter.matches(event_type), expected, "{entry} {event_type}");
            assert_eq!(filter.to_string(), entry, "written back as it was");
        }
    }
}
