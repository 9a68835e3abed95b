#include <gtest/gtest.h>

#include <algorithm>
#include <compare>
#include <string>
#include <vector>

#include "common/ip_address.h"
#include "common/port_range.h"

namespace remora {
namespace {

TEST(Cidr, ParsesAndNormalises) {
  auto c = Cidr::parse("10.1.2.3/8");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->toString(), "10.0.0.0/8");
  EXPECT_TRUE(c->contains(*IpAddress::parse("10.200.0.1")));
  EXPECT_FALSE(c->contains(*IpAddress::parse("11.0.0.1")));
  EXPECT_EQ(Cidr::parse("10.1.122.241")->toString(), "10.1.122.241/32");
  EXPECT_EQ(Cidr::parse("fd00::1/64")->toString(), "fd00::/64");
}

TEST(Cidr, RejectsBadInput) {
  for (const char* bad :
       {"", "10.0.0.0/33", "10.0.0/8", "fd00::/129", "x/1", "10.0.0.0/", "1.2.3.4/-1"}) {
    EXPECT_FALSE(Cidr::parse(bad).ok()) << bad;
  }
  EXPECT_NE(Cidr::parse("10.0.0.0/33").error().message.find("10.0.0.0/33"), std::string::npos);
}

TEST(SocketAddress, ParsesBothFamilies) {
  EXPECT_EQ(SocketAddress::parse("10.1.122.241:9999")->toString(), "10.1.122.241:9999");
  EXPECT_EQ(SocketAddress::parse("[fd00::1]:80")->toString(), "[fd00::1]:80");
  EXPECT_FALSE(SocketAddress::parse("10.0.0.1").ok());
  EXPECT_FALSE(SocketAddress::parse("10.0.0.1:0").ok());
  EXPECT_FALSE(SocketAddress::parse("10.0.0.1:70000").ok());
}

// One order for every map and sorted list of addresses (the DNS answers, the L7 pools): IPv4
// before IPv6, then by bytes in network order; a socket address then by port.
TEST(SocketAddress, OrdersByFamilyThenBytesThenPort) {
  auto ip = [](const char* text) { return *IpAddress::parse(text); };
  auto sa = [](const char* text) { return *SocketAddress::parse(text); };
  std::vector<IpAddress> ips{ip("::1"), ip("10.0.0.2"), ip("9.255.255.255"), ip("10.0.0.10")};
  std::sort(ips.begin(), ips.end());
  std::vector<std::string> texts;
  texts.reserve(ips.size());
  for (const IpAddress& a : ips) texts.push_back(a.toString());
  EXPECT_EQ(texts, (std::vector<std::string>{"9.255.255.255", "10.0.0.2", "10.0.0.10", "::1"}));
  EXPECT_LT(sa("10.0.0.1:443"), sa("10.0.0.2:80"));
  EXPECT_LT(sa("10.0.0.1:80"), sa("10.0.0.1:443"));
  EXPECT_LT(sa("255.255.255.255:65535"), sa("[::]:1"));
  EXPECT_EQ(sa("[fd00::1]:80") <=> sa("[fd00::1]:80"), std::strong_ordering::equal);
}

TEST(PortList, ParsesRangesAndMerges) {
  auto p = parsePortList("8080, 80,8000-8079,9000:9001");
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->size(), 3u);
  EXPECT_EQ((*p)[0], (PortRange{80, 80}));
  EXPECT_EQ((*p)[1], (PortRange{8000, 8080}));
  EXPECT_EQ((*p)[2].toString(), "9000:9001");
  EXPECT_TRUE(parsePortList("")->empty());
}

TEST(PortList, RejectsBadInput) {
  for (const char* bad : {"0", "65536", "80,", "a", "90-80", "1-2-3", "80,,81"}) {
    EXPECT_FALSE(parsePortList(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace remora
