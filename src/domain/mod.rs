//! Domain values, parsed once at the edge (API, bus, config) so the rest of the code can trust
//! them: ids, deliveries and their jobs, event types and the catalog, subscription filters, endpoint URLs, signing secrets.

mod catalog;
mod delivery;
mod endpoint;
mod event_time;
mod headers;
mod ids;
mod keyring;
mod membership;
mod quarantine;
mod secret;
mod source;
mod timestamp;
mod token;
mod webhook;

pub use catalog::{Catalog, EventFilter, FilterError};
pub use delivery::{DeliveryStatus, Job, StoredDelivery, Trigger};
pub use endpoint::{EndpointUrl, TargetPolicy, UrlError, internal_class, is_internal_ip};
pub use event_time::{event_time, trusted_timestamp};
pub use headers::{CustomHeaders, HIDDEN, HeaderError, is_sensitive};
pub use ids::{CompanyId, DeliveryId, EventId, IdError, TokenId, WebhookId, is_short_text};
pub use keyring::{DEVELOPMENT_KEY_ID, KeyRing, KeyRingError, SealError};
pub use membership::Membership;
pub use quarantine::QuarantineReason;
pub use secret::{
    Ed25519Key, PreviousKey, SecretError, SignatureScheme, Signing, SigningKey, SigningSecret,
};
pub use source::Source;
pub use timestamp::parse_utc;
pub use token::{CompanyToken, TOKEN_PREFIX, token_hash};
pub use webhook::DisabledReason;
