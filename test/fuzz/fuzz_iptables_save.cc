// libFuzzer target: the iptables-save parser (remora::intercept::parseIptablesSave), then what
// `remora-init dump` and `dump --trace` do with a parsed nat table: explain it, and walk nat
// OUTPUT for a few packets, rendered as text and as JSON.
//
// Input: iptables-save or ip6tables-save output, with or without -c counters.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "intercept/dump.h"
#include "intercept/iptables_save.h"
#include "intercept/trace.h"

namespace ri = remora::intercept;

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  // Rule lines are also tokenized alone (remora-init does so for its own rules).
  size_t eol = text.find('\n');
  (void)ri::tokenizeRule(text.substr(0, eol));

  auto ruleset = ri::parseIptablesSave(text);
  if (!ruleset) return 0;
  const ri::SavedTable* nat = ruleset->table("nat");
  if (nat == nullptr) return 0;
  for (const auto& rule : nat->rules) (void)nat->chain(rule.chain);

  ri::DumpReport dump =
      ri::buildDump({ri::FamilyTables{"iptables-nft", remora::Family::kIpv4, *nat}});
  (void)ri::renderDump(dump);
  // As `remora-init dump --json` prints it.
  (void)ri::dumpToJson(dump).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);

  static const std::vector<ri::TracePacket> kPackets = [] {
    std::vector<ri::TracePacket> packets(4);
    packets[0].destination = *remora::SocketAddress::parse("10.1.122.241:9999");
    packets[1].destination = *remora::SocketAddress::parse("10.96.0.10:53");
    packets[1].uid = 1337;
    packets[1].source = *remora::IpAddress::parse("10.244.1.5");
    packets[1].out_interface = "eth0";
    packets[2].destination = *remora::SocketAddress::parse("[fd00::1]:80");
    packets[2].gid = 1337;
    packets[3].destination = *remora::SocketAddress::parse("198.51.100.7:443");
    packets[3].origin = ri::TraceOrigin::kArriving;
    packets[3].source = *remora::IpAddress::parse("203.0.113.9");
    packets[3].in_interface = "eth0";
    return packets;
  }();
  ri::TraceContext context;
  context.local_networks = std::vector<remora::Cidr>{*remora::Cidr::parse("127.0.0.0/8")};
  for (const auto& packet : kPackets) {
    ri::TraceReport report;
    report.backend = "iptables-nft";
    report.packet = packet;
    // nat and filter, as `remora-init dump --trace` walks them.
    report.result = ri::traceConnection(*ruleset, packet, context);
    (void)ri::renderTrace(report);
    // As `remora-init dump --trace --json` prints it.
    (void)ri::traceToJson(report).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return 0;
}
