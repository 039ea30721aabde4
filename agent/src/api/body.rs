//! The live event stream as a response body (chunked): each subscription chunk is a batch of
//! NDJSON lines.

use std::task::{Context, Poll};

use bytes::Bytes;

use crate::{export::fanout::Subscription, http::Chunks};

impl Chunks for Subscription {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        Subscription::poll_chunk(self, cx).map(|c| c.map(Ok))
    }
}
