# BPF objects: clang -target bpf -g -O2 (CO-RE, against a vmlinux.h generated from the build
# host's BTF), then `bpftool gen skeleton`, whose header embeds the object: nothing is loaded from
# a .o path at runtime (STYLE.md, libbpf-bootstrap's bpf_object() pattern).
find_program(REMORA_BPF_CLANG NAMES clang REQUIRED)
find_program(REMORA_BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)
set(REMORA_VMLINUX_BTF /sys/kernel/btf/vmlinux CACHE FILEPATH
    "kernel BTF that vmlinux.h is generated from")
set(REMORA_BPF_GEN_DIR ${PROJECT_BINARY_DIR}/bpf-gen)
file(MAKE_DIRECTORY ${REMORA_BPF_GEN_DIR})

# Called once, in the directory whose targets use the skeletons (custom command outputs are
# visible only to targets of the same directory).
function(remora_bpf_vmlinux)
add_custom_command(
  OUTPUT ${REMORA_BPF_GEN_DIR}/vmlinux.h
  COMMAND ${REMORA_BPFTOOL} btf dump file ${REMORA_VMLINUX_BTF} format c
          > ${REMORA_BPF_GEN_DIR}/vmlinux.h.tmp
  COMMAND ${CMAKE_COMMAND} -E rename ${REMORA_BPF_GEN_DIR}/vmlinux.h.tmp
          ${REMORA_BPF_GEN_DIR}/vmlinux.h
  COMMENT "Generating vmlinux.h from ${REMORA_VMLINUX_BTF}"
  VERBATIM)
endfunction()

# remora_bpf_skeleton(<name> <source.bpf.c> <headers...>): builds <name>.bpf.o and
# <name>.skel.h (skeleton struct <name>_bpf) in REMORA_BPF_GEN_DIR.
function(remora_bpf_skeleton name source)
  set(obj ${REMORA_BPF_GEN_DIR}/${name}.bpf.o)
  set(skel ${REMORA_BPF_GEN_DIR}/${name}.skel.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${REMORA_BPF_CLANG} -target bpf -g -O2 -Wall -Werror -D__TARGET_ARCH_x86
            -I${REMORA_BPF_GEN_DIR} -I${CMAKE_CURRENT_SOURCE_DIR} -c ${source} -o ${obj}
    DEPENDS ${source} ${ARGN} ${REMORA_BPF_GEN_DIR}/vmlinux.h
    COMMENT "Compiling BPF object ${name}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${REMORA_BPFTOOL} gen skeleton ${obj} name ${name}_bpf > ${skel}.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${skel}.tmp ${skel}
    DEPENDS ${obj}
    COMMENT "Generating BPF skeleton ${name}.skel.h"
    VERBATIM)
  set_property(GLOBAL APPEND PROPERTY REMORA_BPF_SKELETONS ${skel})
endfunction()
