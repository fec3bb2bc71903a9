//! Answers that keep what they cost until they are sent.
//!
//! A call's permits ([`CallPermit`], an entry-bundle slot) must last until
//! its answer has left: a client that never reads keeps its answer in the
//! server's buffers, and that answer must go on counting against the
//! limits. [`HeldBody`] wraps a response body and drops the permits only
//! with it (sent to the end, or the stream reset). [`Limited`] puts every
//! gRPC call through the [`CallLimiter`] that way, before the call is even
//! decoded.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::body::Body as GrpcBody;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use crate::authz::token_key;
use crate::grpc::status;
use crate::{Access, Shared};

/// A response body that holds `held` until it is dropped.
pub(crate) struct HeldBody<B, H> {
    body: B,
    _held: H,
}

impl<B, H> HeldBody<B, H> {
    /// `body`, holding `held` as long as it lives.
    pub(crate) fn new(body: B, held: H) -> Self {
        HeldBody { body, _held: held }
    }
}

impl<B: Body + Unpin, H: Unpin> Body for HeldBody<B, H> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A gRPC service whose calls are counted by the service's
/// [`CallLimiter`](crate::calls::CallLimiter): beyond the limits a call is
/// answered `RESOURCE_EXHAUSTED` at once, and an admitted call holds its
/// permit until its answer has been sent.
pub(crate) struct Limited<S, A> {
    inner: S,
    shared: Arc<Shared<A>>,
}

impl<S: Clone, A> Clone for Limited<S, A> {
    fn clone(&self) -> Self {
        Limited {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, A> Limited<S, A> {
    /// `inner`, limited by `shared`'s call limiter.
    pub(crate) fn new(inner: S, shared: Arc<Shared<A>>) -> Self {
        Limited { inner, shared }
    }
}

impl<S: NamedService, A> NamedService for Limited<S, A> {
    const NAME: &'static str = S::NAME;
}

impl<S, A> Service<http::Request<GrpcBody>> for Limited<S, A>
where
    S: Service<http::Request<GrpcBody>, Response = http::Response<GrpcBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    A: Access,
{
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<GrpcBody>) -> Self::Future {
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let caller = token_key(header);
        let exempt = self.shared.gate.is_known_appender(&caller);
        let permit = match self.shared.calls.start(caller, exempt) {
            Ok(permit) => permit,
            Err(error) => {
                let refusal = status(error).into_http::<GrpcBody>();
                return Box::pin(async move { Ok(refusal) });
            }
        };
        // The service that was polled ready answers; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(response.map(|body| GrpcBody::new(HeldBody::new(body, permit))))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Sets its flag when dropped.
    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn what_a_body_holds_is_released_only_with_it() {
        use http_body_util_free::collect;

        let dropped = Arc::new(AtomicBool::new(false));
        let body = HeldBody::new(GrpcBody::new(String::from("answer")), Flag(dropped.clone()));
        assert_eq!(body.size_hint().exact(), Some(6));
        let mut body = Box::pin(body);
        let bytes = collect(body.as_mut()).await;
        assert_eq!(bytes, b"answer");
        assert!(body.is_end_stream());
        assert!(!dropped.load(Ordering::SeqCst), "held while the body lives");
        drop(body);
        assert!(dropped.load(Ordering::SeqCst));
    }

    /// Reads a body to its end without http-body-util.
    mod http_body_util_free {
        use std::future::poll_fn;
        use std::pin::Pin;

        use http_body::Body;

        pub(super) async fn collect<B>(mut body: Pin<&mut B>) -> Vec<u8>
        where
            B: Body<Data = tonic::codegen::Bytes>,
            B::Error: std::fmt::Debug,
        {
            let mut out = Vec::new();
            while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                if let Ok(data) = frame.unwrap().into_data() {
                    out.extend_from_slice(&data);
                }
            }
            out
        }
    }
}
