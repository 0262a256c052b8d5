module example.com/hello

go 1.26

require example.com/dep v1.0.0
