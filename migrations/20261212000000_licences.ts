import type { Knex } from 'knex';
import { ACQUIRE_FUNCTION as POOL_KINDS_ACQUIRE_FUNCTION } from './20261211000000_pool_kinds.ts';

/**
 * Signed licences and their capacities (issue 14; docs/licences.md).
 *
 * - `installation`: this database's identity, made once here: the id a vendor binds a licence
 *   to, and when it was made (a database made anew is visible by both).
 * - `licences`: every licence ever installed, in install order (`seq`); the current one is
 *   the last. Never updated or deleted.
 * - `licence_capacities`: what the current licence allows, one row per capacity, with the
 *   licence's window. Every claim locks its capacity's row, and an install locks them all, so
 *   that no claim is decided against a licence being replaced.
 * - `capacity_claims`: `assigned:` and `feature:` claims, held until released. `concurrent:`
 *   claims are leases, in a pool of kind `licence_capacity` whose seats the licence sets.
 * - `licence_events`: every claim, release, refusal and licence change, append-only, with the
 *   database's clock and the use after the event, so that the usage events of issue 15 can be
 *   made from them in order (`id`).
 *
 * `entgate_capacity_claim` and `entgate_capacity_release` decide under the capacity's lock in
 * one database call, with the database's clock: however many processes share the database,
 * holders never outnumber the limit.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table installation (
      singleton boolean primary key default true check (singleton),
      id uuid not null,
      created_at timestamptz not null default clock_timestamp()
    )`);
  await knex.raw('insert into installation (id) values (gen_random_uuid())');
  await knex.raw(`
    create table licences (
      seq bigserial primary key,
      licence_id text not null,
      tenant text not null,
      token text not null,
      claims jsonb not null,
      issued_at timestamptz not null,
      not_before timestamptz not null,
      expires_at timestamptz not null,
      installation_id text,
      installed_at timestamptz not null default clock_timestamp(),
      installed_by text
    )`);
  await knex.raw(`
    create table licence_capacities (
      name text primary key,
      kind text not null check (kind in ('concurrent', 'assigned', 'feature')),
      capacity_limit integer check (capacity_limit >= 0),
      licence_seq bigint not null references licences (seq),
      not_before timestamptz not null,
      expires_at timestamptz not null,
      check (capacity_limit is not null or kind = 'feature')
    )`);
  await knex.raw(`
    create table capacity_claims (
      id uuid primary key,
      capacity text not null,
      entity_id text not null,
      claimed_at timestamptz not null,
      released_at timestamptz,
      release_reason text,
      credential text,
      client_address text,
      metadata jsonb not null default '{}'::jsonb
    )`);
  await knex.raw('create unique index capacity_claims_held on capacity_claims (capacity, entity_id) where released_at is null');
  await knex.raw('create index capacity_claims_released on capacity_claims (released_at) where released_at is not null');
  await knex.raw(`
    create table licence_events (
      id bigserial primary key,
      occurred_at timestamptz not null default clock_timestamp(),
      type text not null check (type in ('licence_installed', 'licence_refused', 'claimed', 'released', 'refused', 'expired')),
      licence_id text,
      capacity text,
      entity_id text,
      in_use integer,
      capacity_limit integer,
      reason text,
      actor text,
      client_address text,
      detail jsonb
    )`);
  await knex.raw('create index licence_events_capacity on licence_events (capacity, id)');

  await knex.raw('alter table lease_pools add column licence_capacity text unique');
  await knex.raw('alter table lease_pools drop constraint lease_pools_kind_check');
  await knex.raw(`
    alter table lease_pools add constraint lease_pools_kind_check check (
         (kind = 'named' and virtual_key_id is null and ses_application is null and licence_capacity is null)
      or (kind = 'virtual_key' and virtual_key_id is not null and ses_application is null and licence_capacity is null and not anonymous)
      or (kind = 'ses_application' and virtual_key_id is null and ses_application is not null and licence_capacity is null and not anonymous)
      or (kind = 'licence_capacity' and virtual_key_id is null and ses_application is null and licence_capacity is not null and not anonymous))`);
  // A licence may allow 0 of a concurrent: capacity (or drop it): its pool then has 0 seats.
  await knex.raw('alter table lease_pools drop constraint lease_pools_bounds_check');
  await knex.raw(
    "alter table lease_pools add constraint lease_pools_bounds_check check ((seats > 0 or (seats = 0 and kind = 'licence_capacity')) and default_ttl_seconds > 0 " +
      'and max_ttl_seconds >= default_ttl_seconds and heartbeat_interval_seconds > 0 and heartbeat_interval_seconds < default_ttl_seconds)',
  );
  await knex.raw('drop function entgate_lease_acquire(text, text, integer, text, integer, json, text, integer, uuid, text, jsonb, text)');
  await knex.raw(ACQUIRE_FUNCTION);
  await knex.raw(CLAIM_FUNCTION);
  await knex.raw(RELEASE_FUNCTION);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function entgate_capacity_release(text, text, text, text, text)');
  await knex.raw('drop function entgate_capacity_claim(text, text, integer, uuid, text, jsonb, text, text, json)');
  await knex.raw("delete from lease_pools where kind = 'licence_capacity'");
  await knex.raw('alter table lease_pools drop constraint lease_pools_bounds_check');
  await knex.raw(
    'alter table lease_pools add constraint lease_pools_bounds_check check (seats > 0 and default_ttl_seconds > 0 ' +
      'and max_ttl_seconds >= default_ttl_seconds and heartbeat_interval_seconds > 0 and heartbeat_interval_seconds < default_ttl_seconds)',
  );
  await knex.raw('alter table lease_pools drop constraint lease_pools_kind_check');
  await knex.raw('alter table lease_pools drop column licence_capacity');
  await knex.raw(`
    alter table lease_pools add constraint lease_pools_kind_check check (
         (kind = 'named' and virtual_key_id is null and ses_application is null)
      or (kind = 'virtual_key' and virtual_key_id is not null and ses_application is null and not anonymous)
      or (kind = 'ses_application' and virtual_key_id is null and ses_application is not null and not anonymous))`);
  await knex.raw('drop table licence_events');
  await knex.raw('drop table capacity_claims');
  await knex.raw('drop table licence_capacities');
  await knex.raw('drop table licences');
  await knex.raw('drop table installation');
  await knex.raw('drop function entgate_lease_acquire(text, text, integer, text, integer, json, text, integer, uuid, text, jsonb, text)');
  await knex.raw(POOL_KINDS_ACQUIRE_FUNCTION);
}

/**
 * The acquire function of 20261211000000_pool_kinds, with one more kind: `licence_capacity`,
 * the pool of a `concurrent:` capacity (`p_owner`: its name), made or given its seats
 * (`p_seats`, the licence's limit) on every acquire, as a virtual key's pool is. `p_owner` is
 * also the SES application of an `ses_application` pool.
 */
const ACQUIRE_FUNCTION = `
create function entgate_lease_acquire(
  p_kind text, p_name text, p_vk_id integer, p_owner text, p_seats integer, p_create json,
  p_client text, p_ttl integer, p_id uuid, p_address text, p_metadata jsonb, p_credential text
) returns json language plpgsql volatile as $fn$
declare
  v_pool lease_pools%rowtype;
  v_now timestamptz;
  v_ttl integer;
  v_lease leases%rowtype;
  v_in_use integer;
  v_earliest timestamptz;
begin
  if p_kind = 'virtual_key' then
    insert into lease_pools (kind, name, virtual_key_id, seats, default_ttl_seconds, max_ttl_seconds, heartbeat_interval_seconds, require_signed)
    values ('virtual_key', p_name, p_vk_id, p_seats, (p_create->>'defaultTtlSeconds')::integer, (p_create->>'maxTtlSeconds')::integer,
            (p_create->>'heartbeatIntervalSeconds')::integer, false)
    on conflict (virtual_key_id) do update
      set seats = excluded.seats,
          updated_at = case when lease_pools.seats = excluded.seats then lease_pools.updated_at else now() end
    returning * into v_pool;
  elsif p_kind = 'licence_capacity' then
    insert into lease_pools (kind, name, licence_capacity, seats, default_ttl_seconds, max_ttl_seconds, heartbeat_interval_seconds, require_signed)
    values ('licence_capacity', p_name, p_owner, p_seats, (p_create->>'defaultTtlSeconds')::integer, (p_create->>'maxTtlSeconds')::integer,
            (p_create->>'heartbeatIntervalSeconds')::integer, false)
    on conflict (licence_capacity) do update
      set seats = excluded.seats,
          updated_at = case when lease_pools.seats = excluded.seats then lease_pools.updated_at else now() end
    returning * into v_pool;
  else
    if p_kind = 'ses_application' then
      insert into lease_pools (kind, name, ses_application, seats, default_ttl_seconds, max_ttl_seconds, heartbeat_interval_seconds, require_signed)
      values ('ses_application', p_name, p_owner, (p_create->>'seats')::integer, (p_create->>'defaultTtlSeconds')::integer,
              (p_create->>'maxTtlSeconds')::integer, (p_create->>'heartbeatIntervalSeconds')::integer, false)
      on conflict do nothing;
      select * into v_pool from lease_pools where ses_application = p_owner for update;
    else
      select * into v_pool from lease_pools where name = p_name for update;
    end if;
    if not found then
      return json_build_object('outcome', 'no_pool');
    end if;
  end if;
  if v_pool.kind <> p_kind then
    return json_build_object('outcome', 'other_kind', 'pool', row_to_json(v_pool));
  end if;

  v_ttl := coalesce(p_ttl, least(v_pool.default_ttl_seconds, v_pool.max_ttl_seconds));
  if v_ttl > v_pool.max_ttl_seconds then
    return json_build_object('outcome', 'ttl_too_long', 'pool', row_to_json(v_pool));
  end if;

  -- The client's live lease is given back only to the credential that acquired it: a clientId
  -- is chosen by the client, so another caller naming it must not renew (or learn) that lease.
  select * into v_lease from leases
   where pool_id = v_pool.id and client_id = p_client and released_at is null and expires_at > clock_timestamp()
   limit 1;
  if found and v_lease.credential is distinct from p_credential then
    insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
    values (clock_timestamp(), 'denied', v_pool.name, null, p_client, 'client_id_in_use', p_address);
    return json_build_object('outcome', 'client_id_in_use', 'pool', row_to_json(v_pool));
  end if;
  update leases set renewed_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => v_ttl), ttl_seconds = v_ttl
   where id = v_lease.id
  returning * into v_lease;
  if found then
    v_now := v_lease.renewed_at;
    insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
    values (v_now, 'renewed', v_pool.name, v_lease.id, p_client, 'reacquired', p_address);
    return json_build_object('outcome', 'existing', 'lease', row_to_json(v_lease), 'pool', row_to_json(v_pool));
  end if;

  -- The clock is read inside the counting statement, after its snapshot was taken: a release
  -- this count does not see committed after that, so it is counted live (never too few), and
  -- one it does see ended before v_now, where the new lease starts (never an overlap).
  select t.now, count(l.id)::integer, min(l.expires_at) into v_now, v_in_use, v_earliest
    from (select clock_timestamp() as now) t
    left join leases l on l.pool_id = v_pool.id and l.released_at is null and l.expires_at > t.now
   group by t.now;
  if v_in_use >= v_pool.seats then
    insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
    values (v_now, 'denied', v_pool.name, null, p_client, 'no_seat_available', p_address);
    return json_build_object('outcome', 'full', 'pool', row_to_json(v_pool), 'inUse', v_in_use, 'earliest', v_earliest, 'now', v_now);
  end if;

  insert into leases (id, pool_id, client_id, acquired_at, renewed_at, expires_at, ttl_seconds, client_address, metadata, credential)
  values (p_id, v_pool.id, p_client, v_now, v_now, v_now + make_interval(secs => v_ttl), v_ttl, p_address, coalesce(p_metadata, '{}'::jsonb), p_credential)
  returning * into v_lease;
  insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
  values (v_now, 'acquired', v_pool.name, v_lease.id, p_client, null, p_address);
  return json_build_object('outcome', 'acquired', 'lease', row_to_json(v_lease), 'pool', row_to_json(v_pool), 'inUse', v_in_use + 1);
end
$fn$`;

/**
 * May entity `p_entity` hold capacity `p_capacity` now. Under the capacity's row lock:
 * - no such capacity: `no_licence` (none installed) or `unknown_capacity`, recorded as refused
 *   (`feature_not_licensed` for a `feature:` capacity);
 * - a claim the entity holds already: `existing` (a concurrent one renewed, as an acquire of
 *   one's own lease is), even once the licence has expired: what is held stays;
 * - outside the licence's window: `expired` or `not_yet_valid`, recorded as refused;
 * - at the limit: `full` with the use, recorded as refused;
 * - else a new claim (`concurrent:`: a lease of the capacity's pool), recorded as claimed.
 * `p_credential` is what the claim is bound to; `p_actor` who asked (recorded).
 */
const CLAIM_FUNCTION = `
create function entgate_capacity_claim(
  p_capacity text, p_entity text, p_ttl integer, p_id uuid, p_address text, p_metadata jsonb,
  p_credential text, p_actor text, p_pool json
) returns json language plpgsql volatile as $fn$
declare
  c licence_capacities%rowtype;
  v_licence text;
  v_now timestamptz;
  v_in_use integer;
  v_claim capacity_claims%rowtype;
  v_held boolean;
  v_result json;
begin
  select * into c from licence_capacities where name = p_capacity for update;
  if not found then
    -- Refused too, and recorded: a feature: capacity of a feature not granted, or a capacity the licence does not name.
    select licence_id into v_licence from licences order by seq desc limit 1;
    insert into licence_events (type, licence_id, capacity, entity_id, reason, actor, client_address)
    values ('refused', v_licence, p_capacity, p_entity,
            case when p_capacity like 'feature:%' then 'feature_not_licensed' when v_licence is null then 'no_licence' else 'unknown_capacity' end,
            p_actor, p_address);
    return json_build_object('outcome', case when v_licence is null then 'no_licence' else 'unknown_capacity' end);
  end if;
  select licence_id into v_licence from licences where seq = c.licence_seq;
  v_now := clock_timestamp();

  if c.kind = 'concurrent' then
    select exists (select 1 from leases l join lease_pools p on p.id = l.pool_id
                    where p.licence_capacity = p_capacity and l.client_id = p_entity
                      and l.released_at is null and l.expires_at > v_now) into v_held;
  else
    select * into v_claim from capacity_claims where capacity = p_capacity and entity_id = p_entity and released_at is null;
    v_held := found;
    if v_held then
      select count(*)::integer into v_in_use from capacity_claims where capacity = p_capacity and released_at is null;
      return json_build_object('outcome', 'existing', 'claim', row_to_json(v_claim), 'inUse', v_in_use, 'limit', c.capacity_limit);
    end if;
  end if;

  if not v_held and (v_now >= c.expires_at or v_now < c.not_before) then
    insert into licence_events (occurred_at, type, licence_id, capacity, entity_id, in_use, capacity_limit, reason, actor, client_address)
    values (v_now, 'refused', v_licence, p_capacity, p_entity, null, c.capacity_limit,
            case when v_now >= c.expires_at then 'licence_expired' else 'licence_not_yet_valid' end, p_actor, p_address);
    return json_build_object('outcome', case when v_now >= c.expires_at then 'expired' else 'not_yet_valid' end,
                             'limit', c.capacity_limit, 'expiresAt', c.expires_at, 'notBefore', c.not_before);
  end if;

  if c.kind = 'concurrent' then
    v_result := entgate_lease_acquire('licence_capacity', p_capacity, null, p_capacity, c.capacity_limit, p_pool,
                                      p_entity, p_ttl, p_id, p_address, p_metadata, p_credential);
    if v_result->>'outcome' = 'acquired' then
      insert into licence_events (occurred_at, type, licence_id, capacity, entity_id, in_use, capacity_limit, reason, actor, client_address)
      values (((v_result->'lease')->>'acquired_at')::timestamptz, 'claimed', v_licence, p_capacity, p_entity,
              (v_result->>'inUse')::integer, c.capacity_limit, null, p_actor, p_address);
    elsif v_result->>'outcome' = 'full' then
      insert into licence_events (occurred_at, type, licence_id, capacity, entity_id, in_use, capacity_limit, reason, actor, client_address)
      values ((v_result->>'now')::timestamptz, 'refused', v_licence, p_capacity, p_entity,
              (v_result->>'inUse')::integer, c.capacity_limit, 'capacity_exceeded', p_actor, p_address);
    end if;
    return v_result;
  end if;

  select count(*)::integer into v_in_use from capacity_claims where capacity = p_capacity and released_at is null;
  if c.capacity_limit is not null and v_in_use >= c.capacity_limit then
    insert into licence_events (occurred_at, type, licence_id, capacity, entity_id, in_use, capacity_limit, reason, actor, client_address)
    values (v_now, 'refused', v_licence, p_capacity, p_entity, v_in_use, c.capacity_limit, 'capacity_exceeded', p_actor, p_address);
    return json_build_object('outcome', 'full', 'inUse', v_in_use, 'limit', c.capacity_limit);
  end if;
  insert into capacity_claims (id, capacity, entity_id, claimed_at, credential, client_address, metadata)
  values (p_id, p_capacity, p_entity, v_now, p_credential, p_address, coalesce(p_metadata, '{}'::jsonb))
  returning * into v_claim;
  insert into licence_events (occurred_at, type, licence_id, capacity, entity_id, in_use, capacity_limit, reason, actor, client_address)
  values (v_now, 'claimed', v_licence, p_capacity, p_entity, v_in_use + 1, c.capacity_limit, null, p_actor, p_address);
  return json_build_object('outcome', 'acquired', 'claim', row_to_json(v_claim), 'inUse', v_in_use + 1, 'limit', c.capacity_limit);
end
$fn$`;

/**
 * Ends the claim entity `p_entity` holds on `p_capacity` (a `concurrent:` one: its lease),
 * under the capacity's lock when the capacity is still licensed: `released` with the use
 * after it (recorded), or `not_held`.
 */
const RELEASE_FUNCTION = `
create function entgate_capacity_release(p_capacity text, p_entity text, p_reason text, p_address text, p_actor text)
returns json language plpgsql volatile as $fn$
declare
  c licence_capacities%rowtype;
  v_kind text;
  v_now timestamptz;
  v_lease leases%rowtype;
  v_pool lease_pools%rowtype;
  v_claim capacity_claims%rowtype;
  v_in_use integer;
  v_licence text;
begin
  select * into c from licence_capacities where name = p_capacity for update;
  v_kind := coalesce(c.kind, split_part(p_capacity, ':', 1));
  select licence_id into v_licence from licences order by seq desc limit 1;
  v_now := clock_timestamp();
  if v_kind = 'concurrent' then
    select * into v_pool from lease_pools where licence_capacity = p_capacity;
    update leases set released_at = v_now
     where pool_id = v_pool.id and client_id = p_entity and released_at is null and expires_at > v_now
    returning * into v_lease;
    if not found then
      return json_build_object('outcome', 'not_held');
    end if;
    insert into lease_events (occurred_at, type, pool, lease_id, client_id, reason, client_address)
    values (v_now, 'released', v_pool.name, v_lease.id, p_entity, p_reason, p_address);
    select count(*)::integer into v_in_use from leases
     where pool_id = v_pool.id and released_at is null and expires_at > v_now;
  else
    update capacity_claims set released_at = v_now, release_reason = p_reason
     where capacity = p_capacity and entity_id = p_entity and released_at is null
    returning * into v_claim;
    if not found then
      return json_build_object('outcome', 'not_held');
    end if;
    select count(*)::integer into v_in_use from capacity_claims where capacity = p_capacity and released_at is null;
  end if;
  insert into licence_events (occurred_at, type, licence_id, capacity, entity_id, in_use, capacity_limit, reason, actor, client_address)
  values (v_now, 'released', v_licence, p_capacity, p_entity, v_in_use, c.capacity_limit, p_reason, p_actor, p_address);
  return json_build_object('outcome', 'released', 'inUse', v_in_use, 'limit', c.capacity_limit);
end
$fn$`;
