-- XEP-0060 publish-subscribe, for every service: an account's PEP service
-- (XEP-0163; `service` is the bare JID) or a service domain (`pubsub.host`).
-- The node configuration is a JSON object owned by the pubsub module.
CREATE TABLE pubsub_nodes (
    service TEXT NOT NULL,
    node TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (service, node)
);

-- Published items; `seq` orders them (the highest is the last published).
CREATE TABLE pubsub_items (
    service TEXT NOT NULL,
    node TEXT NOT NULL,
    item_id TEXT NOT NULL,
    publisher TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- Unix time in milliseconds, for the delay stamp of a late delivery.
    published_at BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (service, node, item_id)
);
CREATE INDEX pubsub_items_seq ON pubsub_items (service, node, seq);

-- §4.1 affiliations other than "none".
CREATE TABLE pubsub_affiliations (
    service TEXT NOT NULL,
    node TEXT NOT NULL,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    PRIMARY KEY (service, node, jid)
);
CREATE INDEX pubsub_affiliations_jid ON pubsub_affiliations (jid);

-- §4.2 subscriptions: one per JID and node; `state` is subscribed or pending.
CREATE TABLE pubsub_subscriptions (
    service TEXT NOT NULL,
    node TEXT NOT NULL,
    jid TEXT NOT NULL,
    subid TEXT NOT NULL,
    state TEXT NOT NULL,
    -- §6.3 subscription option pubsub#deliver: 0 pauses notifications.
    deliver INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (service, node, jid)
);
CREATE INDEX pubsub_subscriptions_jid ON pubsub_subscriptions (jid);
