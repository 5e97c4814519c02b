// AXI4 slave memory model for the compiled (CXXRTL) engine.
//
// Lives on the compiled side so that a whole layer simulates without crossing into Python every cycle.
// The memory is a byte buffer owned by Python (a numpy array). Each cycle the model drives its ready and
// response signals, samples the handshakes, and updates its state after the rising edge; read latency,
// a bandwidth limit (one beat every `beat_interval` cycles), seeded random back-pressure on every
// channel, error responses for address windows and protocol checks are configurable.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

struct scn_axi_sig {
    cxxrtl_object *o;
};

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

struct scn_error_window {
    uint64_t lo, hi;     // [lo, hi)
    uint32_t resp;       // 2 = SLVERR, 3 = DECERR
    uint32_t on_write;   // 0: reads, 1: writes
};

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
    uint64_t mem_size;
    uint32_t data_bytes;
    uint32_t latency;
    uint32_t beat_interval;
    uint32_t stall_permille;   // probability (x1000) that a ready/valid is withheld in a cycle
    uint32_t max_outstanding;
    uint64_t rng;

    std::vector<scn_error_window> errors;
    std::deque<scn_burst> reads;       // accepted, not yet fully returned
    std::deque<scn_burst> writes;      // accepted AW, waiting for W beats
    std::deque<std::pair<uint32_t, uint32_t>> bresp;   // (id, resp) to send
    uint32_t read_beat = 0, write_beat = 0;
    uint32_t read_resp_sticky = 0, write_resp_sticky = 0;
    uint64_t cycle = 0, last_beat_cycle = 0;

    // statistics and checks
    uint64_t read_bytes = 0, write_bytes = 0, violations = 0, max_reads_seen = 0;
    std::string first_violation;

    // per-cycle decisions
    bool drive_aw_ready, drive_w_ready, drive_ar_ready, drive_r_valid, drive_b_valid;
    bool hs_aw, hs_w, hs_b, hs_ar, hs_r;
};

static bool scn_chance(scn_axi_slave *s) {
    if (!s->stall_permille) return false;
    s->rng ^= s->rng << 13; s->rng ^= s->rng >> 7; s->rng ^= s->rng << 17;
    return (s->rng % 1000) < s->stall_permille;
}

static void scn_violation(scn_axi_slave *s, const std::string &what) {
    if (!s->violations) s->first_violation = what;
    s->violations++;
}

static uint32_t scn_error_for(scn_axi_slave *s, uint64_t addr, uint64_t bytes, bool write) {
    for (auto &e : s->errors)
        if (e.on_write == (write ? 1u : 0u) && addr < e.hi && addr + bytes > e.lo) return e.resp;
    if (addr + bytes > s->mem_size) return 3;  // DECERR outside memory
    return 0;
}

static void scn_check_burst(scn_axi_slave *s, uint64_t addr, uint64_t len, uint64_t size, uint64_t burst,
                            const char *ch) {
    char buf[160];
    uint64_t bytes = (len + 1) * s->data_bytes;
    if (burst != 1) { snprintf(buf, sizeof buf, "%s: burst type %llu is not INCR", ch, (unsigned long long)burst); scn_violation(s, buf); }
    if ((1ull << size) != s->data_bytes) { snprintf(buf, sizeof buf, "%s: size %llu is not the bus width", ch, (unsigned long long)size); scn_violation(s, buf); }
    if (addr % s->data_bytes) { snprintf(buf, sizeof buf, "%s: address 0x%llx is not aligned", ch, (unsigned long long)addr); scn_violation(s, buf); }
    if ((addr & ~0xFFFull) != ((addr + bytes - 1) & ~0xFFFull)) {
        snprintf(buf, sizeof buf, "%s: burst at 0x%llx of %llu bytes crosses a 4 KiB boundary", ch,
                 (unsigned long long)addr, (unsigned long long)bytes);
        scn_violation(s, buf);
    }
}

extern "C" {

scn_axi_slave *scn_axi_create(cxxrtl_handle h, const char *prefix, uint8_t *mem, uint64_t mem_size,
                              uint32_t data_bytes, uint32_t latency, uint32_t beat_interval,
                              uint32_t stall_permille, uint32_t max_outstanding, uint64_t seed) {
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
    s->mem = mem; s->mem_size = mem_size; s->data_bytes = data_bytes; s->latency = latency;
    s->beat_interval = beat_interval ? beat_interval : 1; s->stall_permille = stall_permille;
    s->max_outstanding = max_outstanding ? max_outstanding : 1; s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    return s;
}

void scn_axi_destroy(scn_axi_slave *s) { delete s; }

void scn_axi_add_error(scn_axi_slave *s, uint64_t lo, uint64_t hi, uint32_t resp, uint32_t on_write) {
    s->errors.push_back({lo, hi, resp, on_write});
}

void scn_axi_clear_errors(scn_axi_slave *s) { s->errors.clear(); }

// Phase 1 (clock low): decide and drive the slave's outputs for this cycle.
void scn_axi_drive(scn_axi_slave *s) {
    s->drive_ar_ready = s->reads.size() < s->max_outstanding && !scn_chance(s);
    s->drive_aw_ready = s->writes.size() < s->max_outstanding && !scn_chance(s);
    s->drive_w_ready = !s->writes.empty() && !scn_chance(s);
    s->drive_b_valid = !s->bresp.empty() && !scn_chance(s);
    bool can_beat = !s->reads.empty() && s->cycle >= s->reads.front().ready_at &&
                    s->cycle - s->last_beat_cycle >= s->beat_interval;
    s->drive_r_valid = can_beat && !scn_chance(s);
    scn_set(s->ar_ready, s->drive_ar_ready);
    scn_set(s->aw_ready, s->drive_aw_ready);
    scn_set(s->w_ready, s->drive_w_ready);
    scn_set(s->b_valid, s->drive_b_valid);
    if (s->drive_b_valid) {
        scn_set(s->b_resp, s->bresp.front().second);
        if (s->b_id) scn_set(s->b_id, s->bresp.front().first);
    }
    scn_set(s->r_valid, s->drive_r_valid);
    if (s->drive_r_valid) {
        scn_burst &b = s->reads.front();
        uint64_t addr = b.addr + (uint64_t)s->read_beat * s->data_bytes;
        uint32_t resp = scn_error_for(s, b.addr, (uint64_t)b.beats * s->data_bytes, false);
        uint64_t data = 0;
        if (!resp) memcpy(&data, s->mem + addr, s->data_bytes);
        scn_set(s->r_data, data);
        scn_set(s->r_resp, resp);
        scn_set(s->r_last, s->read_beat + 1 == b.beats);
        if (s->r_id) scn_set(s->r_id, b.id);
    } else {
        scn_set(s->r_last, 0);
    }
}

// Phase 2 (clock low, settled): sample the handshakes that the coming rising edge completes.
void scn_axi_sample(scn_axi_slave *s) {
    s->hs_ar = s->drive_ar_ready && scn_get(s->ar_valid);
    s->hs_aw = s->drive_aw_ready && scn_get(s->aw_valid);
    s->hs_w = s->drive_w_ready && scn_get(s->w_valid);
    s->hs_b = s->drive_b_valid && scn_get(s->b_ready);
    s->hs_r = s->drive_r_valid && scn_get(s->r_ready);
    if (s->hs_ar) {
        uint64_t addr = scn_get(s->ar_addr), len = scn_get(s->ar_len);
        scn_check_burst(s, addr, len, scn_get(s->ar_size), scn_get(s->ar_burst), "AR");
        s->reads.push_back({addr, (uint32_t)len + 1, s->ar_id ? (uint32_t)scn_get(s->ar_id) : 0u,
                            s->cycle + 1 + s->latency});
        if (s->reads.size() > s->max_reads_seen) s->max_reads_seen = s->reads.size();
    }
    if (s->hs_w) {
        scn_burst &b = s->writes.front();
        uint64_t addr = b.addr + (uint64_t)s->write_beat * s->data_bytes;
        uint32_t resp = scn_error_for(s, b.addr, (uint64_t)b.beats * s->data_bytes, true);
        if (resp) s->write_resp_sticky = resp;
        uint64_t data = scn_get(s->w_data), strb = scn_get(s->w_strb);
        if (!resp)
            for (uint32_t i = 0; i < s->data_bytes; i++)
                if (strb >> i & 1) { s->mem[addr + i] = (uint8_t)(data >> (8 * i)); s->write_bytes++; }
        bool last = scn_get(s->w_last);
        if (last != (s->write_beat + 1 == b.beats)) scn_violation(s, "W: WLAST does not mark the burst's last beat");
        if (++s->write_beat == b.beats) {
            s->bresp.push_back({b.id, s->write_resp_sticky});
            s->write_resp_sticky = 0;
            s->write_beat = 0;
            s->writes.pop_front();
        }
    }
    // AW after W of the same cycle: a new burst never receives this cycle's beat.
    if (s->hs_aw) {
        uint64_t addr = scn_get(s->aw_addr), len = scn_get(s->aw_len);
        scn_check_burst(s, addr, len, scn_get(s->aw_size), scn_get(s->aw_burst), "AW");
        s->writes.push_back({addr, (uint32_t)len + 1, s->aw_id ? (uint32_t)scn_get(s->aw_id) : 0u, 0});
    }
    if (s->hs_b) s->bresp.pop_front();
    if (s->hs_r) {
        scn_burst &b = s->reads.front();
        s->read_bytes += s->data_bytes;
        s->last_beat_cycle = s->cycle;
        if (++s->read_beat == b.beats) { s->read_beat = 0; s->reads.pop_front(); }
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
    }
    return 0;
}

const char *scn_axi_first_violation(scn_axi_slave *s) { return s->first_violation.c_str(); }

}
