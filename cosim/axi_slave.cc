// AXI4 slave memory model for the compiled (CXXRTL) engine: the C++ twin of cosim/axi_memory.py.
//
// Lives on the compiled side so that a whole layer simulates without crossing into Python every cycle.
// The memory is a byte buffer owned by Python (a numpy array). Each cycle the model drives its ready and
// response signals, samples the handshakes, and updates its state after the rising edge. Timing, the
// random back-pressure (the same xorshift64 stream, drawn in the same order), per-beat error responses and
// the protocol checks (with the same messages) follow cosim/axi_memory.py exactly, so both engines run the
// same design cycle for cycle: change one, change the other.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

static uint64_t scn_get(cxxrtl_object *o) {
    uint64_t v = o->curr[0];
    if (o->width > 32) v |= (uint64_t)o->curr[1] << 32;
    return v;
}

static void scn_set(cxxrtl_object *o, uint64_t v) {
    o->next[0] = (uint32_t)v;
    if (o->width > 32) o->next[1] = (uint32_t)(v >> 32);
}

struct scn_burst {
    uint64_t addr;
    uint32_t beats;
    uint32_t id;
    uint64_t ready_at;   // cycle from which the first beat may be returned (read latency)
};

struct scn_bresp {
    uint32_t id, resp;
    uint64_t ready_at;   // write latency
};

struct scn_error_window {
    uint64_t lo, hi;     // [lo, hi)
    uint32_t resp;       // 2 = SLVERR, 3 = DECERR
    uint32_t on_read, on_write;
};

struct scn_violation_rec {
    uint64_t cycle;
    std::string text;    // "channel\tmessage"
};

static const size_t SCN_MAX_VIOLATIONS = 1000;   // kept in full; further ones are only counted

struct scn_axi_slave {
    // master -> slave
    cxxrtl_object *aw_valid, *aw_addr, *aw_len, *aw_size, *aw_burst, *aw_id;
    cxxrtl_object *w_valid, *w_data, *w_strb, *w_last;
    cxxrtl_object *b_ready;
    cxxrtl_object *ar_valid, *ar_addr, *ar_len, *ar_size, *ar_burst, *ar_id;
    cxxrtl_object *r_ready;
    // slave -> master
    cxxrtl_object *aw_ready, *w_ready, *b_valid, *b_resp, *b_id;
    cxxrtl_object *ar_ready, *r_valid, *r_data, *r_resp, *r_last, *r_id;

    uint8_t *mem;
    uint64_t mem_size, base;
    uint32_t data_bytes;
    uint32_t read_latency, write_latency;
    uint32_t beat_interval;
    uint32_t stall_permille;   // probability (x1000) that a ready/new valid is withheld in a cycle
    uint32_t max_outstanding;
    uint64_t rng;

    std::vector<scn_error_window> errors;
    bool writable_set = false;
    std::vector<std::pair<uint64_t, uint64_t>> writable;
    std::deque<scn_burst> reads;       // accepted, not yet fully returned
    std::deque<scn_burst> writes;      // accepted AW, waiting for W beats
    std::deque<scn_bresp> bresp;       // responses to send
    uint32_t read_beat = 0, write_beat = 0, write_worst = 0;
    uint64_t cycle = 0, next_beat_at = 0;
    bool r_held = false, b_held = false;   // a VALID stays up until its handshake

    // VALID/payload stability checks on the master's channels
    bool wait_ar = false, wait_aw = false, wait_w = false;
    uint64_t pay_ar[5], pay_aw[5], pay_w[3];

    // statistics and checks
    uint64_t read_bytes = 0, write_bytes = 0, violations = 0, max_reads_seen = 0;
    uint64_t writes_outstanding = 0, max_writes_seen = 0;
    std::vector<scn_violation_rec> violation_log;

    // per-cycle decisions
    bool drive_aw_ready, drive_w_ready, drive_ar_ready, drive_r_valid, drive_b_valid;
};

static bool scn_chance(scn_axi_slave *s) {
    if (!s->stall_permille) return false;
    s->rng ^= s->rng << 13; s->rng ^= s->rng >> 7; s->rng ^= s->rng << 17;
    return (s->rng % 1000) < s->stall_permille;
}

static void scn_violation(scn_axi_slave *s, const char *channel, const std::string &what) {
    if (s->violation_log.size() < SCN_MAX_VIOLATIONS)
        s->violation_log.push_back({s->cycle, std::string(channel) + "\t" + what});
    s->violations++;
}

static uint32_t scn_resp_for(scn_axi_slave *s, uint64_t addr, bool write) {
    for (auto &e : s->errors)
        if ((write ? e.on_write : e.on_read) && addr < e.hi && addr + s->data_bytes > e.lo) return e.resp;
    if (addr < s->base || addr + s->data_bytes > s->base + s->mem_size) return 3;  // DECERR outside memory
    return 0;
}

static void scn_check_burst(scn_axi_slave *s, uint64_t addr, uint64_t len, uint64_t size, uint64_t burst,
                            const char *ch) {
    char buf[160];
    uint32_t size_log2 = 0;
    while ((1u << size_log2) < s->data_bytes) size_log2++;
    if (burst != 1) { snprintf(buf, sizeof buf, "burst type %llu is not INCR", (unsigned long long)burst); scn_violation(s, ch, buf); }
    if (size != size_log2) { snprintf(buf, sizeof buf, "size %llu is not the full data width (%u)", (unsigned long long)size, size_log2); scn_violation(s, ch, buf); }
    if (addr % s->data_bytes) { snprintf(buf, sizeof buf, "address 0x%llx is not aligned to %u bytes", (unsigned long long)addr, s->data_bytes); scn_violation(s, ch, buf); }
    if ((addr & 0xFFF) + (len + 1) * s->data_bytes > 0x1000) {
        snprintf(buf, sizeof buf, "burst at 0x%llx of %llu beats crosses a 4 KiB boundary",
                 (unsigned long long)addr, (unsigned long long)(len + 1));
        scn_violation(s, ch, buf);
    }
}

static void scn_check_stable(scn_axi_slave *s, const char *ch, bool &waiting, uint64_t *prev, const uint64_t *now,
                             int n, bool valid, bool ready) {
    if (waiting) {
        if (!valid) scn_violation(s, ch, "VALID dropped before READY");
        else if (memcmp(prev, now, n * sizeof(uint64_t))) scn_violation(s, ch, "payload changed while VALID and not READY");
    }
    waiting = valid && !ready;
    if (waiting) memcpy(prev, now, n * sizeof(uint64_t));
}

extern "C" {

scn_axi_slave *scn_axi_create(cxxrtl_handle h, const char *prefix, uint8_t *mem, uint64_t mem_size, uint64_t base,
                              uint32_t data_bytes, uint32_t read_latency, uint32_t write_latency,
                              uint32_t beat_interval, uint32_t stall_permille, uint32_t max_outstanding,
                              uint64_t seed) {
    scn_axi_slave *s = new scn_axi_slave();
    auto get = [&](const char *name) -> cxxrtl_object * {
        std::string full = std::string(prefix) + "__" + name;
        size_t parts = 0;
        cxxrtl_object *o = cxxrtl_get_parts(h, full.c_str(), &parts);
        if (!o || parts != 1) return nullptr;
        return o;
    };
#define SCN_PORT(field, name) s->field = get(name); if (!s->field) { delete s; return nullptr; }
    SCN_PORT(aw_valid, "aw__valid") SCN_PORT(aw_addr, "aw__addr") SCN_PORT(aw_len, "aw__len")
    SCN_PORT(aw_size, "aw__size") SCN_PORT(aw_burst, "aw__burst") SCN_PORT(aw_ready, "aw__ready")
    SCN_PORT(w_valid, "w__valid") SCN_PORT(w_data, "w__data") SCN_PORT(w_strb, "w__strb")
    SCN_PORT(w_last, "w__last") SCN_PORT(w_ready, "w__ready")
    SCN_PORT(b_valid, "b__valid") SCN_PORT(b_resp, "b__resp") SCN_PORT(b_ready, "b__ready")
    SCN_PORT(ar_valid, "ar__valid") SCN_PORT(ar_addr, "ar__addr") SCN_PORT(ar_len, "ar__len")
    SCN_PORT(ar_size, "ar__size") SCN_PORT(ar_burst, "ar__burst") SCN_PORT(ar_ready, "ar__ready")
    SCN_PORT(r_valid, "r__valid") SCN_PORT(r_data, "r__data") SCN_PORT(r_resp, "r__resp")
    SCN_PORT(r_last, "r__last") SCN_PORT(r_ready, "r__ready")
#undef SCN_PORT
    s->aw_id = get("aw__id"); s->ar_id = get("ar__id"); s->b_id = get("b__id"); s->r_id = get("r__id");
    s->mem = mem; s->mem_size = mem_size; s->base = base; s->data_bytes = data_bytes;
    s->read_latency = read_latency; s->write_latency = write_latency;
    s->beat_interval = beat_interval ? beat_interval : 1; s->stall_permille = stall_permille;
    s->max_outstanding = max_outstanding ? max_outstanding : 1; s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    return s;
}

void scn_axi_destroy(scn_axi_slave *s) { delete s; }

void scn_axi_add_error(scn_axi_slave *s, uint64_t lo, uint64_t hi, uint32_t resp, uint32_t on_read,
                       uint32_t on_write) {
    s->errors.push_back({lo, hi, resp, on_read, on_write});
}

void scn_axi_clear_errors(scn_axi_slave *s) { s->errors.clear(); }

void scn_axi_add_writable(scn_axi_slave *s, uint64_t lo, uint64_t hi) {
    s->writable_set = true;
    s->writable.push_back({lo, hi});
}

// Phase 1 (clock low): decide and drive the slave's outputs for this cycle.
void scn_axi_drive(scn_axi_slave *s) {
    s->drive_ar_ready = s->reads.size() < s->max_outstanding && !scn_chance(s);
    s->drive_aw_ready = s->writes.size() < s->max_outstanding && !scn_chance(s);
    s->drive_w_ready = !s->writes.empty() && !scn_chance(s);
    s->drive_b_valid = s->b_held ||
        (!s->bresp.empty() && s->bresp.front().ready_at <= s->cycle && !scn_chance(s));
    s->drive_r_valid = s->r_held ||
        (!s->reads.empty() && s->cycle >= s->reads.front().ready_at && s->cycle >= s->next_beat_at &&
         !scn_chance(s));
    scn_set(s->ar_ready, s->drive_ar_ready);
    scn_set(s->aw_ready, s->drive_aw_ready);
    scn_set(s->w_ready, s->drive_w_ready);
    scn_set(s->b_valid, s->drive_b_valid);
    if (s->drive_b_valid) {
        scn_set(s->b_resp, s->bresp.front().resp);
        if (s->b_id) scn_set(s->b_id, s->bresp.front().id);
    }
    scn_set(s->r_valid, s->drive_r_valid);
    if (s->drive_r_valid) {
        scn_burst &b = s->reads.front();
        uint64_t addr = b.addr + (uint64_t)s->read_beat * s->data_bytes;
        uint32_t resp = scn_resp_for(s, addr, false);
        uint64_t data = 0;
        if (!resp) memcpy(&data, s->mem + (addr - s->base), s->data_bytes);
        scn_set(s->r_data, data);
        scn_set(s->r_resp, resp);
        scn_set(s->r_last, s->read_beat + 1 == b.beats);
        if (s->r_id) scn_set(s->r_id, b.id);
    }
}

// Phase 2 (clock low, settled): sample the handshakes that the coming rising edge completes.
void scn_axi_sample(scn_axi_slave *s) {
    bool ar_valid = scn_get(s->ar_valid), aw_valid = scn_get(s->aw_valid), w_valid = scn_get(s->w_valid);
    uint64_t ar_p[5] = {scn_get(s->ar_addr), scn_get(s->ar_len), scn_get(s->ar_size), scn_get(s->ar_burst),
                        s->ar_id ? scn_get(s->ar_id) : 0};
    uint64_t aw_p[5] = {scn_get(s->aw_addr), scn_get(s->aw_len), scn_get(s->aw_size), scn_get(s->aw_burst),
                        s->aw_id ? scn_get(s->aw_id) : 0};
    uint64_t w_p[3] = {scn_get(s->w_data), scn_get(s->w_strb), scn_get(s->w_last)};
    scn_check_stable(s, "ar", s->wait_ar, s->pay_ar, ar_p, 5, ar_valid, s->drive_ar_ready);
    scn_check_stable(s, "aw", s->wait_aw, s->pay_aw, aw_p, 5, aw_valid, s->drive_aw_ready);
    scn_check_stable(s, "w", s->wait_w, s->pay_w, w_p, 3, w_valid, s->drive_w_ready);

    if (s->drive_ar_ready && ar_valid) {
        scn_check_burst(s, ar_p[0], ar_p[1], ar_p[2], ar_p[3], "ar");
        s->reads.push_back({ar_p[0], (uint32_t)ar_p[1] + 1, (uint32_t)ar_p[4], s->cycle + 1 + s->read_latency});
        if (s->reads.size() > s->max_reads_seen) s->max_reads_seen = s->reads.size();
    }
    if (s->drive_w_ready && w_valid) {
        scn_burst &b = s->writes.front();
        uint64_t addr = b.addr + (uint64_t)s->write_beat * s->data_bytes;
        uint32_t resp = scn_resp_for(s, addr, true);
        uint64_t data = w_p[0], strb = w_p[1];
        bool allowed = true;
        if (strb && s->writable_set) {
            allowed = false;
            for (auto &r : s->writable)
                if (r.first <= addr && addr + s->data_bytes <= r.second) { allowed = true; break; }
            if (!allowed) {
                char buf[96];
                snprintf(buf, sizeof buf, "write to 0x%llx outside the writable ranges", (unsigned long long)addr);
                scn_violation(s, "w", buf);
            }
        }
        if (!resp && allowed)
            for (uint32_t i = 0; i < s->data_bytes; i++)
                if (strb >> i & 1) { s->mem[addr - s->base + i] = (uint8_t)(data >> (8 * i)); s->write_bytes++; }
        if (resp > s->write_worst) s->write_worst = resp;
        bool last = w_p[2], expect_last = s->write_beat + 1 == b.beats;
        if (last != expect_last) {
            char buf[128];
            if (last)
                snprintf(buf, sizeof buf, "WLAST on beat %u, expected on beat %u (burst at 0x%llx)", s->write_beat,
                         b.beats - 1, (unsigned long long)b.addr);
            else
                snprintf(buf, sizeof buf, "WLAST missing on beat %u of the burst at 0x%llx", b.beats - 1,
                         (unsigned long long)b.addr);
            scn_violation(s, "w", buf);
        }
        if (++s->write_beat == b.beats) {
            s->bresp.push_back({b.id, s->write_worst, s->cycle + 1 + s->write_latency});
            s->write_worst = 0;
            s->write_beat = 0;
            s->writes.pop_front();
        }
    }
    // AW after W of the same cycle: a new burst never receives this cycle's beat.
    if (s->drive_aw_ready && aw_valid) {
        scn_check_burst(s, aw_p[0], aw_p[1], aw_p[2], aw_p[3], "aw");
        s->writes.push_back({aw_p[0], (uint32_t)aw_p[1] + 1, (uint32_t)aw_p[4], 0});
        s->writes_outstanding++;
        if (s->writes_outstanding > s->max_writes_seen) s->max_writes_seen = s->writes_outstanding;
    }
    if (s->drive_b_valid && scn_get(s->b_ready)) {
        s->bresp.pop_front();
        s->b_held = false;
        s->writes_outstanding--;
    } else {
        s->b_held = s->drive_b_valid;
    }
    if (s->drive_r_valid && scn_get(s->r_ready)) {
        scn_burst &b = s->reads.front();
        s->read_bytes += s->data_bytes;
        s->next_beat_at = s->cycle + s->beat_interval;
        if (++s->read_beat == b.beats) { s->read_beat = 0; s->reads.pop_front(); }
        s->r_held = false;
    } else {
        s->r_held = s->drive_r_valid;
    }
}

// Phase 3 (after the rising edge).
void scn_axi_advance(scn_axi_slave *s) { s->cycle++; }

uint64_t scn_axi_stat(scn_axi_slave *s, int which) {
    switch (which) {
    case 0: return s->read_bytes;
    case 1: return s->write_bytes;
    case 2: return s->violations;
    case 3: return s->max_reads_seen;
    case 4: return s->reads.size() + s->writes.size() + s->bresp.size();
    case 5: return s->max_writes_seen;
    case 6: return s->cycle;
    case 7: return s->violation_log.size();
    }
    return 0;
}

/* The i-th recorded violation as "channel\tmessage"; its cycle in *cycle. */
const char *scn_axi_violation(scn_axi_slave *s, uint64_t i, uint64_t *cycle) {
    if (i >= s->violation_log.size()) return "";
    *cycle = s->violation_log[i].cycle;
    return s->violation_log[i].text.c_str();
}

}
