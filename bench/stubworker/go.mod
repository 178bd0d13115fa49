module kubesessions.io/bench/stubworker

go 1.22
