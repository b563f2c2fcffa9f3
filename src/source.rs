//! Mail sources. [`Pop3Source`] reads a POP3 maildrop: indexed with pipelined `TOP n 0`,
//! fetched with pipelined `RETR`, never modified (no DELE).

use crate::endpoint::Side;
use crate::error::{Error, SessionError};
use crate::identity;
use crate::index::SourceMessage;
use crate::migrate::{Account, ConnectOptions};
use crate::pop3::{FetchError, Pop3Client};
use crate::session;
use crate::transfer::{Outgoing, Source};

/// The one folder a POP3 maildrop has.
pub const POP3_FOLDER: &str = "INBOX";

/// Largest message mailferry will read from a POP3 server (a bound against a runaway server).
const MAX_MESSAGE_SIZE: u64 = 1 << 30;

/// A POP3 maildrop as a [`Source`].
pub struct Pop3Source {
    client: Pop3Client,
    account: Account,
    flags: Vec<String>,
}

/// Why a fetch loop stopped early on the caller's request.
struct Stop;

impl Pop3Source {
    /// Connects and logs in. `mark_seen` gives every copy the `\Seen` flag (POP3 has none).
    pub fn connect(
        account: &Account,
        options: &ConnectOptions,
        mark_seen: bool,
    ) -> Result<Self, Error> {
        Ok(Pop3Source {
            client: session::open_pop3(account, Side::From, options)?,
            account: account.clone(),
            flags: if mark_seen {
                vec!["\\Seen".to_owned()]
            } else {
                Vec::new()
            },
        })
    }

    fn failed(&self, err: SessionError) -> Error {
        Error::from_session(&self.account.endpoint, Side::From, err)
    }
}

impl Source for Pop3Source {
    fn folders(&mut self) -> Result<Vec<String>, Error> {
        Ok(vec![POP3_FOLDER.to_owned()])
    }

    fn index(&mut self, _folder: &str) -> Result<Vec<SourceMessage>, Error> {
        let sizes = self.client.list().map_err(|e| self.failed(e))?;
        let msgnos: Vec<u32> = sizes.iter().map(|&(n, _)| n).collect();
        let mut index = Vec::with_capacity(sizes.len());
        let mut sizes_in_order = sizes.iter();
        let flags = &self.flags;
        let refused = self
            .client
            .top_headers(&msgnos, |msgno, header| {
                // TOP answers come back in the order asked, which is LIST order.
                let size = sizes_in_order
                    .find(|&&(n, _)| n == msgno)
                    .map_or(0, |&(_, size)| size);
                index.push(SourceMessage {
                    key: msgno,
                    identity: identity::identify(&header, size),
                    size,
                    flags: flags.clone(),
                    internal_date: identity::arrival_date(&header),
                });
                Ok::<(), Stop>(())
            })
            .map_err(|e| match e {
                FetchError::Session(err) => self.failed(err),
                FetchError::Stopped(Stop) => unreachable!("the index callback never stops"),
            })?;
        if let Some((msgno, reason)) = refused.first() {
            return Err(self.failed(SessionError::Refused(format!(
                "TOP {msgno} 0 refused ({reason}); the server may not support TOP"
            ))));
        }
        Ok(index)
    }

    fn fetch(
        &mut self,
        _folder: &str,
        messages: Vec<SourceMessage>,
        deliver: &mut dyn FnMut(Outgoing) -> bool,
    ) -> Result<(), Error> {
        let msgnos: Vec<u32> = messages.iter().map(|m| m.key).collect();
        let mut planned = messages.into_iter();
        let result = self.client.retr(&msgnos, MAX_MESSAGE_SIZE, |msgno, raw| {
            let message = planned
                .find(|m| m.key == msgno)
                .expect("RETR answers come in the order asked");
            if deliver(Outgoing { message, raw }) {
                Ok(())
            } else {
                Err(Stop)
            }
        });
        match result {
            Ok(refused) => match refused.first() {
                None => Ok(()),
                Some((msgno, reason)) => Err(self.failed(SessionError::Refused(format!(
                    "RETR {msgno} refused: {reason}"
                )))),
            },
            Err(FetchError::Stopped(Stop)) => Ok(()),
            Err(FetchError::Session(err)) => Err(self.failed(err)),
        }
    }
}
