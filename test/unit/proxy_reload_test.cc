// The reload helpers: what counts as an empty config, and reading a file until it settles.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "proxy/proxy.h"

namespace remora::proxy {
namespace {

using namespace std::chrono_literals;

TEST(IsEmptyConfigTest, OnlyBlankLinesCommentsAndDocumentMarkers) {
  EXPECT_TRUE(isEmptyConfig(""));
  EXPECT_TRUE(isEmptyConfig("\n  \n\t\r\n"));
  EXPECT_TRUE(isEmptyConfig("# nothing yet\n---\n--- # second\n...\n  # indented\n"));
  EXPECT_FALSE(isEmptyConfig("apiVersion: v1\n"));
  EXPECT_FALSE(isEmptyConfig("---\nkind: List\nitems: []\n"));  // explicitly empty: not refused
  EXPECT_FALSE(isEmptyConfig("--- {}\n"));
  EXPECT_FALSE(isEmptyConfig("# x\nkind"));
}

class ReadSettledTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/remora-reload-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/mesh.yaml";
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  std::string dir_, path_;
};

TEST_F(ReadSettledTest, WaitsForAWriterThatPausesBetweenWrites) {
  { std::ofstream(path_) << "first half\n"; }
  std::thread writer([&] {
    std::this_thread::sleep_for(30ms);
    std::ofstream(path_, std::ios::app) << "second half\n";
  });
  ConfigRead read = readSettled(path_, 100ms, 50);
  writer.join();
  ASSERT_TRUE(read.ok) << read.error;
  EXPECT_EQ(read.text, "first half\nsecond half\n");
}

TEST_F(ReadSettledTest, AMissingFileIsAnErrorThatNamesIt) {
  ConfigRead read = readSettled(path_, 1ms, 3);
  EXPECT_FALSE(read.ok);
  EXPECT_NE(read.error.find(path_), std::string::npos) << read.error;
  EXPECT_EQ(read, readConfigFile(path_));
}

}  // namespace
}  // namespace remora::proxy
