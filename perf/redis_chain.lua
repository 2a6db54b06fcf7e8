#!lua name=kvdex
-- SPDX-License-Identifier: Apache-2.0
--
-- Redis 7 function library of kvdex-bench baseline (FUNCTION LOAD REPLACE;
-- embedded into kvdex-bench at build time).
--
-- kvdex_walk (read-only, FCALL_RO): the server-side prefix walk over the hash
-- layout, one hash per block "blk:{ns}:{key}" whose fields are holders
-- "worker:dp" (value: tier). KEYS are the chain's blocks in order. A worker's
-- matched count grows only while it holds every block so far, and the walk
-- stops at the first block where nobody advanced -- the same rule as kvdex's
-- client-side merge. Returns a flat array: holder, matched, holder, matched...
-- (only per-worker matched counts, not per-tier ones: less work than kvdex's
-- answer, which favours Redis).
--
-- kvdex_pk_apply: publish into the packed layout, one string per block whose
-- value is a list of 8-byte holder records (worker u32 LE, dp u16 LE, tier u8,
-- pad u8). KEYS[i] gets the event in bytes 8i-7..8i of ARGV[1], in the same
-- record format with the pad byte set to the event type (0 store, 1 remove).
-- A store replaces the tier of an existing (worker, dp) record or appends one;
-- a remove deletes it; an empty list deletes the key. Running it on the server
-- makes each read-modify-write atomic (a client-side GET + SET would race
-- with other publishers).

local function walk(keys, args)
    local matched = {}
    for i = 1, #keys do
        local holders = redis.call('HKEYS', keys[i])
        local advanced = false
        for j = 1, #holders do
            local h = holders[j]
            if (matched[h] or 0) == i - 1 then
                matched[h] = i
                advanced = true
            end
        end
        if not advanced then
            break
        end
    end
    local out = {}
    for h, m in pairs(matched) do
        out[#out + 1] = h
        out[#out + 1] = m
    end
    return out
end

local function pk_apply_one(key, rec)
    local id = string.sub(rec, 1, 6)
    local remove = string.byte(rec, 8) == 1
    local cur = redis.call('GET', key) or ''
    local parts = {}
    local found = false
    for off = 1, #cur, 8 do
        local r = string.sub(cur, off, off + 7)
        if string.sub(r, 1, 6) == id then
            found = true
            if not remove then
                parts[#parts + 1] = string.sub(rec, 1, 7) .. '\0'
            end
        else
            parts[#parts + 1] = r
        end
    end
    if not found and not remove then
        parts[#parts + 1] = string.sub(rec, 1, 7) .. '\0'
    end
    if #parts == 0 then
        redis.call('DEL', key)
    else
        redis.call('SET', key, table.concat(parts))
    end
end

local function pk_apply(keys, args)
    local ops = args[1]
    if #ops ~= 8 * #keys then
        return redis.error_reply('kvdex_pk_apply: expected 8 bytes per key')
    end
    for i = 1, #keys do
        pk_apply_one(keys[i], string.sub(ops, 8 * i - 7, 8 * i))
    end
    return #keys
end

redis.register_function{function_name = 'kvdex_walk', callback = walk, flags = {'no-writes'}}
redis.register_function('kvdex_pk_apply', pk_apply)
