//! Disk image writers: GPT, FAT32 ESP, ext4 root (via mke2fs -d), qcow2.
