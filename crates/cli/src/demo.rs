//! `passerelle demo`: registers one user on each demo app of a running hub
//! and runs a short encrypted conversation among them, printing what each
//! side sees.

use anyhow::{Context as _, anyhow};
use clap::Args;
use passerelle_client::{Client, Event};
use passerelle_proto::IdentifierScheme;
use passerelle_proto::content::Body;
use rand::Rng as _;

use crate::chat::{register, render};

/// Which hub to run the demo against.
#[derive(Args)]
pub struct DemoArgs {
    /// The hub (run `passerelle serve` first).
    #[arg(
        long,
        env = "PASSERELLE_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let server = args.server.as_str();
    let home = std::env::temp_dir().join(format!("passerelle-demo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&home)?;
    out!(
        "Passerelle demo against {server} (local state in {})\n",
        home.display()
    );

    let apps = Client::apps(server)
        .await
        .with_context(|| format!("is a hub running at {server}? (`passerelle serve`)"))?;
    let app_for = |scheme| {
        apps.iter()
            .find(|a| a.scheme == scheme)
            .map(|a| a.id.to_string())
            .ok_or_else(|| anyhow!("the hub has no app with {scheme:?} identifiers"))
    };
    let (phone_app, user_app, random_app) = (
        app_for(IdentifierScheme::PhoneNumber)?,
        app_for(IdentifierScheme::Username)?,
        app_for(IdentifierScheme::RandomId)?,
    );

    let mut rng = rand::thread_rng();
    let phone = format!("+1555{:07}", rng.gen_range(0..10_000_000));
    let username = format!("alice_{:04}", rng.gen_range(0..10_000));

    out!("1. Registering one user on each app");
    let carol = register(server, &home, &phone_app, Some(&phone), None, "demo").await?;
    let alice = register(server, &home, &user_app, Some(&username), None, "demo").await?;
    let rae = register(server, &home, &random_app, None, None, "demo").await?;
    for client in [&alice, &carol, &rae] {
        out!("   {} (account {})", client.address(), client.account_id());
    }

    out!(
        "\n2. {} writes to {} across apps",
        alice.address(),
        carol.address()
    );
    alice
        .send_text(
            carol.address(),
            "Hi Carol! Writing from Parley to your Chime number.",
        )
        .await?;
    show(&carol).await?;

    out!(
        "\n3. {} answers; {} writes too",
        carol.address(),
        rae.address()
    );
    carol
        .send_text(
            alice.address(),
            "Hello Alice, it arrived end-to-end encrypted.",
        )
        .await?;
    rae.send_text(alice.address(), "And greetings from Murmur!")
        .await?;
    let seen = show(&alice).await?;

    out!("\n4. {} reacts to Carol's message", alice.address());
    if let Some((sent_at, author)) = seen.iter().find_map(|e| match e {
        Event::Message {
            sent_at,
            from_account,
            from,
            ..
        } if from == carol.address() => Some((*sent_at, *from_account)),
        _ => None,
    }) {
        alice
            .send(
                carol.address(),
                Body::Reaction {
                    target: passerelle_proto::content::MessageRef { author, sent_at },
                    emoji: "👍".into(),
                    remove: false,
                },
            )
            .await?;
    }
    show(&carol).await?;

    out!("\n5. Alice and Carol compare safety numbers");
    let a = alice.safety_number(carol.address()).await?;
    let c = carol.safety_number(alice.address()).await?;
    out!("   {}'s view:   {}", alice.address(), a.displayable);
    out!("   {}'s view: {}", carol.address(), c.displayable);
    if a.displayable == c.displayable {
        alice.verify(carol.address()).await?;
        out!("   they match: Alice marks Carol as verified");
    } else {
        out!("   they differ: someone is in the middle!");
    }

    out!("\nThe hub stored and forwarded only ciphertext. Try it from two terminals:");
    out!("  passerelle chat register --app {user_app} --handle ada");
    out!("  passerelle chat register --app {phone_app} --handle +15550100200");
    out!("  passerelle chat --as ada@{user_app} send +15550100200@{phone_app} hello");
    out!("  passerelle chat --as +15550100200@{phone_app} listen");
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

/// Fetches and prints what is waiting for `client`.
async fn show(client: &Client) -> anyhow::Result<Vec<Event>> {
    let events = client.sync_once().await?;
    for event in &events {
        out!("   [{} sees] {}", client.address(), render(event));
    }
    Ok(events)
}
