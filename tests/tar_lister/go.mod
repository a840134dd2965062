module ocibuild.test/tar_lister

go 1.19
