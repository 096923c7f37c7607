//! Effects as data: eight families of requests, each with its typed response.
//!
//! A program never performs IO; it hands an effect value to the engine and gets the
//! effect's typed output back. Every request type implements [`Effect`], which ties it
//! to its output and to the [`Family`] it belongs to.
//!
//! The built-in families live in the [`Std`] family. To add your own without forking
//! this crate, define a family whose request and response enums wrap [`Request`] and
//! [`Response`] beside your own variants, implement [`Family`] and [`EmbedStd`] for it,
//! and implement [`Effect`] for your request types (see `examples/custom_family.rs`).
//!
//! The family enums are deliberately exhaustive: a driver that compiles answers every
//! effect, and adding an effect is a visible change for drivers.

use std::fmt;

use serde::{Deserialize, Serialize};

mod auth;
mod cache;
mod database;
pub(crate) mod float;
mod messaging;
mod metrics;
pub mod sqlstate;
mod storage;
mod system;
mod websocket;

pub use auth::*;
pub use cache::*;
pub use database::*;
pub use messaging::*;
pub use metrics::*;
pub use storage::*;
pub use system::*;
pub use websocket::*;

/// A set of effects a program may ask for and the responses a driver gives back.
pub trait Family: 'static {
    /// Every request of the family, as one type.
    type Request: fmt::Debug + 'static;
    /// Every response of the family, as one type.
    type Response: fmt::Debug + 'static;
    /// The request's name, `Family.Effect`, for errors, logs and traces.
    fn request_name(request: &Self::Request) -> &'static str;
    /// The response's name, `Family.Effect`, for errors, logs and traces.
    fn response_name(response: &Self::Response) -> &'static str;
    /// Whether the engine's default per-effect timeout
    /// ([`EngineConfig::effect_timeout`](crate::EngineConfig::effect_timeout)) applies to
    /// `request`. It does to request/response effects (the default); it does not to
    /// waits that are long by nature, such as a client's next frame or a consume with
    /// its own timeout. A family that embeds the built-in one should answer for the
    /// built-in requests as [`Request::waits_by_nature`] does.
    fn default_timeout_applies(request: &Self::Request) -> bool {
        let _ = request;
        true
    }
}

/// One effect request, tied to its family and its typed output.
pub trait Effect<F: Family> {
    /// What the effect produces when the driver performs it: domain outcomes included.
    type Output;
    /// `Family.Effect`, the name used in errors.
    const NAME: &'static str;
    /// The request as the family's request type.
    fn into_request(self) -> F::Request;
    /// The typed output from the family's response, or the response back when it
    /// answers another effect (the engine turns that into a protocol error).
    fn from_response(response: F::Response) -> Result<Self::Output, F::Response>;
}

/// A family that contains the built-in effects, so that every built-in effect type
/// is an [`Effect`] of it.
pub trait EmbedStd: Family {
    /// A built-in request as this family's request.
    fn embed_request(request: Request) -> Self::Request;
    /// A built-in response as this family's response.
    fn embed_response(response: Response) -> Self::Response;
    /// This family's response as a built-in one, or back if it is one of the family's own.
    fn project_response(response: Self::Response) -> Result<Response, Self::Response>;
}

/// The built-in family: WebSocket, Database, Cache, Messaging, Storage, Auth, System
/// and Metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Std;

impl Family for Std {
    type Request = Request;
    type Response = Response;
    fn request_name(request: &Request) -> &'static str {
        request.name()
    }
    fn response_name(response: &Response) -> &'static str {
        response.name()
    }
    fn default_timeout_applies(request: &Request) -> bool {
        !request.waits_by_nature()
    }
}

impl EmbedStd for Std {
    fn embed_request(request: Request) -> Request {
        request
    }
    fn embed_response(response: Response) -> Response {
        response
    }
    fn project_response(response: Response) -> Result<Response, Response> {
        Ok(response)
    }
}

/// Declares one built-in family: its request and response enums, their names, and
/// the [`Effect`] impl of each request type.
macro_rules! family {
    (
        $(#[$doc:meta])*
        $Family:ident: $Req:ident => $Resp:ident {
            $( $Effect:ident $([$boxed:ident])? => $Output:ty ),* $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum $Req {
            $(
                #[doc = concat!("See [`", stringify!($Effect), "`].")]
                $Effect($crate::effect::variant_type!($Effect $(, $boxed)?)),
            )*
        }

        #[doc = concat!("The typed answer to each [`", stringify!($Req), "`].")]
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum $Resp {
            $(
                #[doc = concat!("Answers [`", stringify!($Effect), "`].")]
                $Effect($Output),
            )*
        }

        impl $Req {
            /// `Family.Effect`, for errors, logs and traces.
            pub fn name(&self) -> &'static str {
                match self {
                    $( $Req::$Effect(_) => concat!(stringify!($Family), ".", stringify!($Effect)), )*
                }
            }
        }

        impl $Resp {
            /// `Family.Effect` of the request this answers.
            pub fn name(&self) -> &'static str {
                match self {
                    $( $Resp::$Effect(_) => concat!(stringify!($Family), ".", stringify!($Effect)), )*
                }
            }
        }

        $(
            impl<F: $crate::effect::EmbedStd> $crate::effect::Effect<F> for $Effect {
                type Output = $Output;
                const NAME: &'static str = concat!(stringify!($Family), ".", stringify!($Effect));
                #[inline]
                fn into_request(self) -> F::Request {
                    F::embed_request($crate::effect::Request::$Family($Req::$Effect($crate::effect::variant_value!(self $(, $boxed)?))))
                }
                #[inline]
                fn from_response(response: F::Response) -> Result<$Output, F::Response> {
                    let response = match F::project_response(response) {
                        Ok(response) => response,
                        Err(own) => return Err(own),
                    };
                    match response {
                        $crate::effect::Response::$Family(family) => match family {
                            $Resp::$Effect(v) => Ok(v),
                            #[allow(unreachable_patterns)]
                            other => Err(F::embed_response($crate::effect::Response::$Family(other))),
                        },
                        #[allow(unreachable_patterns)]
                        other => Err(F::embed_response(other)),
                    }
                }
            }

            impl From<$Effect> for $crate::effect::Request {
                fn from(effect: $Effect) -> Self {
                    $crate::effect::Request::$Family($Req::$Effect($crate::effect::variant_value!(effect $(, $boxed)?)))
                }
            }
        )*
    };
}
pub(crate) use family;

/// The payload type of a request variant: large requests are boxed so that every
/// request stays small to move.
macro_rules! variant_type {
    ($Effect:ident) => { $Effect };
    ($Effect:ident, boxed) => { Box<$Effect> };
}
pub(crate) use variant_type;

macro_rules! variant_value {
    ($value:expr) => {
        $value
    };
    ($value:expr, boxed) => {
        Box::new($value)
    };
}
pub(crate) use variant_value;

/// Declares the union of the built-in families.
macro_rules! families {
    ($( $Family:ident($Req:ident, $Resp:ident) ),* $(,)?) => {
        /// Any built-in request.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub enum Request {
            $(
                #[doc = concat!("A ", stringify!($Family), " effect.")]
                $Family($Req),
            )*
        }

        /// Any built-in response.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub enum Response {
            $(
                #[doc = concat!("The answer to a ", stringify!($Family), " effect.")]
                $Family($Resp),
            )*
        }

        impl Request {
            /// `Family.Effect`, for errors, logs and traces.
            pub fn name(&self) -> &'static str {
                match self { $( Request::$Family(r) => r.name(), )* }
            }
            /// The family's name, as interpreters register it.
            pub fn family(&self) -> &'static str {
                match self { $( Request::$Family(_) => stringify!($Family), )* }
            }
            /// Whether this is a wait that is long by nature, so the engine's default
            /// per-effect timeout does not apply to it: a client's next frame
            /// (`WebSocket.ReceiveText`), a consume, which has its own timeout
            /// (`Messaging.ConsumeMessage`), the wait for the chat room's next
            /// messages (`Database.WaitRoomMessages`), and the wait for the driver's
            /// shutdown (`System.WaitForShutdown`).
            pub fn waits_by_nature(&self) -> bool {
                matches!(
                    self,
                    Request::WebSocket(WebSocketRequest::ReceiveText(_))
                        | Request::Messaging(MessagingRequest::ConsumeMessage(_))
                        | Request::Database(DatabaseRequest::WaitRoomMessages(_))
                        | Request::System(SystemRequest::WaitForShutdown(_))
                )
            }
        }

        impl Response {
            /// `Family.Effect` of the request this answers.
            pub fn name(&self) -> &'static str {
                match self { $( Response::$Family(r) => r.name(), )* }
            }
        }

        /// The names of the built-in families.
        pub const FAMILIES: &[&str] = &[$( stringify!($Family) ),*];
    };
}

families! {
    WebSocket(WebSocketRequest, WebSocketResponse),
    Database(DatabaseRequest, DatabaseResponse),
    Cache(CacheRequest, CacheResponse),
    Messaging(MessagingRequest, MessagingResponse),
    Storage(StorageRequest, StorageResponse),
    Auth(AuthRequest, AuthResponse),
    System(SystemRequest, SystemResponse),
    Metrics(MetricsRequest, MetricsResponse),
}

// Requests and responses move through every hop of the engine's hot path: keep them
// small (large payloads are boxed; see the `[boxed]` marks above).
const _: () = assert!(std::mem::size_of::<Request>() <= 80);
const _: () = assert!(std::mem::size_of::<Response>() <= 80);

/// Decodes `response` as `E`'s output, turning a response to another effect into a
/// protocol error that names both.
pub fn decode<F: Family, E: Effect<F>>(
    response: F::Response,
) -> Result<E::Output, crate::EffectError> {
    E::from_response(response)
        .map_err(|other| crate::EffectError::mismatched_response(E::NAME, F::response_name(&other)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn requests_and_responses_round_trip_through_json() {
        let req: Request = GetUserById {
            user_id: Uuid::nil(),
        }
        .into();
        let json = serde_json::to_string(&req).unwrap();
        let back: Request = serde_json::from_str(&json).unwrap();
        assert_eq!(back, req);
        assert_eq!(back.name(), "Database.GetUserById");
        assert_eq!(back.family(), "Database");
    }

    #[test]
    fn typed_output_is_decoded_and_a_mismatch_names_both_effects() {
        let ok = Response::System(SystemResponse::GenerateUuid(Uuid::nil()));
        assert_eq!(decode::<Std, GenerateUuid>(ok.clone()), Ok(Uuid::nil()));
        let err = decode::<Std, GetCurrentTime>(ok).unwrap_err();
        assert_eq!(err.effect, "System.GetCurrentTime");
        assert!(err.message.contains("System.GenerateUuid"), "{err}");
        assert!(!err.retryable);
    }

    #[test]
    fn every_family_is_listed() {
        assert_eq!(FAMILIES.len(), 8);
        assert!(FAMILIES.contains(&"Metrics"));
    }
}
