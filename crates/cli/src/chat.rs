//! `passerelle chat`: one command-line client for every app of a hub.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use passerelle_client::{Client, ClientError, Event, ReceiptKind};
use passerelle_proto::content::Body;
use passerelle_proto::{Address, DeviceId, IdentifierScheme};

use crate::profile;

/// Options common to every chat command.
#[derive(Args)]
pub struct ChatArgs {
    /// The hub.
    #[arg(
        long,
        env = "PASSERELLE_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Where local accounts are kept (default ~/.local/share/passerelle).
    #[arg(long, env = "PASSERELLE_HOME", global = true)]
    home: Option<PathBuf>,
    /// The local account to act as: an address, or address#device.
    #[arg(long = "as", env = "PASSERELLE_AS", global = true)]
    who: Option<String>,
    #[command(subcommand)]
    command: ChatCommand,
}

#[derive(Subcommand)]
enum ChatCommand {
    /// List the hub's apps and how each names its users.
    Apps,
    /// Register a new account on an app.
    Register {
        /// The app (see `apps`).
        #[arg(long)]
        app: String,
        /// The phone number or username; none for apps that issue ids.
        #[arg(long)]
        handle: Option<String>,
        /// The verification code, for phone-number apps (asked for when
        /// missing).
        #[arg(long, requires = "session")]
        code: Option<String>,
        /// The verification session the code belongs to.
        #[arg(long)]
        session: Option<uuid::Uuid>,
        /// A name for this device.
        #[arg(long, default_value = "passerelle-cli")]
        device_name: String,
    },
    /// List the local accounts.
    Accounts,
    /// Send a text message.
    Send {
        /// The recipient's address, handle@app.
        to: Address,
        /// The text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Receive messages: print what is waiting, then keep listening
    /// (or stop with --once).
    Listen {
        /// Stop once everything waiting has been received.
        #[arg(long)]
        once: bool,
    },
    /// List conversations: each contact with its app, handle and whether
    /// its identity is verified.
    Conversations,
    /// Show the messages exchanged with a contact.
    History {
        /// The contact's address.
        with: Address,
    },
    /// Show the safety number shared with a contact, to compare in person.
    SafetyNumber {
        /// The contact's address.
        with: Address,
    },
    /// Mark a contact's identity as verified, after comparing safety
    /// numbers.
    Verify {
        /// The contact's address.
        with: Address,
    },
    /// Accept the new identity key of a contact whose safety number
    /// changed after you verified it (e.g. they reinstalled). Compare
    /// safety numbers and verify again afterwards.
    AcceptIdentity {
        /// The contact's address.
        with: Address,
    },
    /// Link this machine as a new device of an existing account: shows a
    /// code (and QR code) to approve on a device of that account.
    Link {
        /// A name for this device.
        #[arg(long, default_value = "passerelle-cli")]
        device_name: String,
    },
    /// Approve a new device shown by `link`, from a device of the account.
    ApproveLink {
        /// The link code (passerelle://link?...).
        uri: String,
    },
    /// List the devices of the account.
    Devices,
    /// Remove a device from the account.
    RemoveDevice {
        /// Its id.
        device: u32,
    },
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let home = profile::home(args.home.as_deref());
    profile::create_home(&home)?;
    let who = args.who.as_deref();
    match args.command {
        ChatCommand::Apps => {
            for app in Client::apps(&args.server).await? {
                out!(
                    "{:<10} {:<12} {:<13} third-party contact: {}",
                    app.id,
                    app.name,
                    scheme_name(app.scheme),
                    if app.third_party_contact { "yes" } else { "no" }
                );
            }
        }
        ChatCommand::Register {
            app,
            handle,
            code,
            session,
            device_name,
        } => {
            let client = register(
                &args.server,
                &home,
                &app,
                handle.as_deref(),
                code.zip(session),
                &device_name,
            )
            .await?;
            out!(
                "registered {} (device {}); account id {}",
                client.address(),
                client.device_id(),
                client.account_id()
            );
        }
        ChatCommand::Accounts => {
            for name in profile::list(&home)? {
                out!("{name}");
            }
        }
        ChatCommand::Send { to, text } => {
            let client = profile::open(&home, who)?;
            match client.send_text(&to, &text.join(" ")).await {
                Ok(sent) => out!("sent to {to} at {}", sent.sent_at),
                Err(ClientError::UntrustedIdentity { .. }) => bail!(
                    "not sent: the safety number with {to} changed since you verified it \
                     (they may have reinstalled, or someone may be intercepting). \
                     Check with them, then accept the new key with \
                     `passerelle chat accept-identity {to}` and compare safety numbers again"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        ChatCommand::Listen { once } => {
            let client = profile::open(&home, who)?;
            listen(&client, once).await?;
        }
        ChatCommand::Conversations => {
            let client = profile::open(&home, who)?;
            for c in client.conversations()? {
                out!(
                    "{:<32} app {:<8} handle {:<16} {}",
                    c.address,
                    c.app,
                    c.handle,
                    if c.verified {
                        "verified"
                    } else {
                        "not verified"
                    }
                );
            }
        }
        ChatCommand::History { with } => {
            let client = profile::open(&home, who)?;
            for entry in client.history(&with)? {
                let arrow = match entry.direction {
                    passerelle_client::MessageDirection::Incoming => "<-",
                    passerelle_client::MessageDirection::Outgoing => "->",
                };
                out!(
                    "{} {arrow} {}",
                    entry.sent_at,
                    describe(entry.body.as_ref())
                );
            }
        }
        ChatCommand::SafetyNumber { with } => {
            let client = profile::open(&home, who)?;
            let number = client.safety_number(&with).await?;
            out!("safety number with {with}:\n\n{}\n", number.displayable);
            print_qr(&number.scannable);
        }
        ChatCommand::Verify { with } => {
            let client = profile::open(&home, who)?;
            client.verify(&with).await?;
            out!("{with} is now verified");
        }
        ChatCommand::AcceptIdentity { with } => {
            let client = profile::open(&home, who)?;
            client.accept_identity(&with).await?;
            out!(
                "accepted the new identity of {with} (not verified): compare safety numbers \
                 with `passerelle chat safety-number {with}`, then `passerelle chat verify {with}`"
            );
        }
        ChatCommand::Link { device_name } => {
            let pending_path = profile::pending_path(&home);
            let pending = Client::begin_link(&args.server, &pending_path, &device_name).await?;
            let uri = pending.uri();
            out!("On a device of the account, run:\n\n  passerelle chat approve-link '{uri}'\n");
            print_qr(uri.as_bytes());
            out!("waiting for approval...");
            let client = pending.complete().await?;
            let client = profile::settle(&home, &pending_path, client)?;
            out!(
                "linked as device {} of {}",
                client.device_id(),
                client.address()
            );
        }
        ChatCommand::ApproveLink { uri } => {
            let client = profile::open(&home, who)?;
            client.approve_link(&uri).await?;
            out!("approved; the new device finishes linking by itself");
        }
        ChatCommand::Devices => {
            let client = profile::open(&home, who)?;
            for d in client.devices().await? {
                let me = if d.device_id == client.device_id() {
                    " (this one)"
                } else {
                    ""
                };
                out!("{:>3}  {}{me}", d.device_id, d.name);
            }
        }
        ChatCommand::RemoveDevice { device } => {
            let client = profile::open(&home, who)?;
            let device = DeviceId::new(device).map_err(|e| anyhow!("{e}"))?;
            client.remove_device(device).await?;
            out!("removed device {device}");
        }
    }
    Ok(())
}

/// Registers an account, asking for the verification code of phone-number
/// apps when it is not given.
pub async fn register(
    server: &str,
    home: &std::path::Path,
    app: &str,
    handle: Option<&str>,
    verification: Option<(String, uuid::Uuid)>,
    device_name: &str,
) -> anyhow::Result<Client> {
    let apps = Client::apps(server).await?;
    let info = apps
        .iter()
        .find(|a| a.id.as_str() == app)
        .ok_or_else(|| anyhow!("the hub has no app {app}"))?;
    let verification = match (info.scheme, verification) {
        (IdentifierScheme::PhoneNumber, None) => {
            let phone = handle.ok_or_else(|| anyhow!("{app} needs --handle +<phone number>"))?;
            let session = Client::request_verification(server, app, phone).await?;
            let code = match session.dev_code.clone() {
                Some(code) => {
                    out!("the hub is in development mode: using its code {code}");
                    code
                }
                None => ask_code(session.session_id)?,
            };
            Some((session.session_id, code))
        }
        (_, Some((code, session))) => Some((session, code)),
        (_, None) => None,
    };
    let pending = profile::pending_path(home);
    let client = Client::register(server, &pending, app, handle, verification, device_name).await?;
    profile::settle(home, &pending, client)
}

fn ask_code(session: uuid::Uuid) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("a code was sent; run again with --session {session} --code <the code>");
    }
    out_inline!("a code was sent; enter it: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

async fn listen(client: &Client, once: bool) -> anyhow::Result<()> {
    let mut listener = client.listen().await?;
    loop {
        let next = tokio::select! {
            next = listener.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = next else { return Ok(()) };
        match event? {
            Event::QueueEmpty if once => return Ok(()),
            Event::QueueEmpty => out!("-- up to date; listening (Ctrl-C to stop)"),
            event => out!("{}", render(&event)),
        }
    }
}

/// One line for an event.
pub fn render(event: &Event) -> String {
    match event {
        Event::Message { from, body, .. } => format!("{from}: {}", describe(Some(body))),
        Event::Receipt {
            from,
            kind,
            sent_at,
        } => {
            let kind = match kind {
                ReceiptKind::Delivery => "delivery",
                ReceiptKind::Read => "read",
            };
            format!("{from} {kind} receipt for {} message(s)", sent_at.len())
        }
        Event::Typing { from, started } => {
            format!(
                "{from} {}",
                if *started {
                    "is typing"
                } else {
                    "stopped typing"
                }
            )
        }
        Event::SentTranscript {
            device, to, body, ..
        } => {
            format!("(device {device} sent to {to}) {}", describe(Some(body)))
        }
        Event::Expired { recipient, .. } => {
            format!("a message to {recipient} expired before it was delivered")
        }
        Event::IdentityChanged { account, address } => format!(
            "the identity of {} changed: compare safety numbers again",
            address
                .as_ref()
                .map_or_else(|| account.to_string(), ToString::to_string)
        ),
        Event::Undecryptable { from, reason, .. } => {
            format!("a message from {from} could not be read ({reason})")
        }
        Event::Unsupported { from, reason, .. } => {
            format!("a message from {from} needs a newer passerelle ({reason})")
        }
        Event::QueueEmpty => "(up to date)".to_owned(),
        _ => "(an event this version does not show)".to_owned(),
    }
}

/// A short description of a message body.
pub fn describe(body: Option<&Body>) -> String {
    match body {
        None => "(deleted)".to_owned(),
        Some(Body::Text { text }) => text.clone(),
        Some(Body::Reply { text, .. }) => format!("(reply) {text}"),
        Some(Body::Reaction { emoji, remove, .. }) => {
            if *remove {
                format!("(took back {emoji})")
            } else {
                format!("(reacted {emoji})")
            }
        }
        Some(Body::Edit { text, .. }) => format!("(edited) {text}"),
        Some(Body::Delete { .. }) => "(deleted a message)".to_owned(),
        Some(Body::DeliveryReceipt { sent_at }) => {
            format!("(delivery receipt for {} message(s))", sent_at.len())
        }
        Some(Body::ReadReceipt { sent_at }) => {
            format!("(read receipt for {} message(s))", sent_at.len())
        }
        Some(Body::Typing { started: true }) => "(typing)".to_owned(),
        Some(Body::Typing { started: false }) => "(stopped typing)".to_owned(),
        Some(Body::SentTranscript {
            destination, body, ..
        }) => format!("(to {destination}) {}", describe(Some(body))),
        Some(_) => "(a message this version does not show)".to_owned(),
    }
}

fn scheme_name(scheme: IdentifierScheme) -> &'static str {
    match scheme {
        IdentifierScheme::PhoneNumber => "phone number",
        IdentifierScheme::Username => "username",
        IdentifierScheme::RandomId => "random id",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// Prints bytes as a QR code with Unicode half blocks.
fn print_qr(data: &[u8]) {
    match qrcode::QrCode::new(data) {
        Ok(code) => {
            let image = code
                .render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .build();
            out!("{image}\n");
        }
        Err(e) => out!("(no QR code: {e})"),
    }
}
