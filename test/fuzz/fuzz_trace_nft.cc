// libFuzzer target: the nftables side of `remora-init dump` and `dump --trace`: the libnftables
// JSON parser (remora::intercept::parseNftRuleset), the dump of its tables
// (buildNftDump/renderNftDump/nftDumpToJson), and the walk of every base chain for a few packets
// (traceConnection with no iptables tables), rendered as text and as JSON.
//
// Input: `nft -j list ruleset` output, optionally followed by a line "#TEXT" and the
// `nft -a list ruleset` listing (each rule's text by handle).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "intercept/dump_nft.h"
#include "intercept/trace.h"
#include "intercept/trace_nft.h"

namespace ri = remora::intercept;

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string json(input);
  std::string text;
  if (size_t at = input.find("\n#TEXT\n"); at != std::string_view::npos) {
    json = std::string(input.substr(0, at));
    text = std::string(input.substr(at + 7));
  }
  auto ruleset = ri::parseNftRuleset(json, text);
  if (!ruleset) return 0;

  ri::NftDump dump = ri::buildNftDump(*ruleset);
  (void)ri::renderNftDump(dump);
  (void)ri::nftDumpToJson(dump).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);

  static const std::vector<ri::TracePacket> kPackets = [] {
    std::vector<ri::TracePacket> packets(4);
    packets[0].destination = *remora::SocketAddress::parse("10.96.0.10:80");
    packets[0].source = *remora::IpAddress::parse("10.244.0.5");
    packets[0].out_interface = "eth0";
    packets[0].gid = 0;
    packets[1].destination = *remora::SocketAddress::parse("10.1.2.3:80");
    packets[1].uid = 1337;
    packets[2].destination = *remora::SocketAddress::parse("[fd00::1]:443");
    packets[2].gid = 1337;
    packets[3].destination = *remora::SocketAddress::parse("198.51.100.7:443");
    packets[3].origin = ri::TraceOrigin::kArriving;
    packets[3].source = *remora::IpAddress::parse("203.0.113.9");
    packets[3].in_interface = "eth0";
    return packets;
  }();
  ri::TraceContext context;
  context.local_networks = std::vector<remora::Cidr>{*remora::Cidr::parse("127.0.0.0/8"),
                                                     *remora::Cidr::parse("10.244.0.5/32")};
  context.route_device = [](const remora::IpAddress&) -> std::optional<std::string> {
    return "eth0";
  };
  context.interface_addresses =
      [](const std::string&) -> std::optional<std::vector<remora::IpAddress>> {
    return std::vector<remora::IpAddress>{*remora::IpAddress::parse("10.244.0.5")};
  };
  static const ri::SavedRuleset kNoIptables{};
  for (const auto& packet : kPackets) {
    ri::TraceReport report;
    report.backend = "iptables-nft";
    report.packet = packet;
    report.result = ri::traceConnection(kNoIptables, packet, context, &*ruleset);
    (void)ri::renderTrace(report);
    (void)ri::traceToJson(report).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return 0;
}
