// swift-tools-version:5.9
// Tern for Swift: the hand-written `Tern` module over the uniffi-generated `TernFFI` module and
// the `TernCore` xcframework that the GitHub workflow builds (.github/workflows/mobile.yml).
import PackageDescription

let package = Package(
    name: "Tern",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Tern", targets: ["Tern"]),
    ],
    targets: [
        // libtern_bindings for every Apple target, with tern_bindingsFFI.h and its modulemap.
        .binaryTarget(name: "TernCore", path: "TernCore.xcframework"),
        // The generated bindings (bindings/generated/swift/tern_bindings.swift, copied here by
        // the workflow).
        .target(name: "TernFFI", dependencies: ["TernCore"], path: "Sources/TernFFI"),
        .target(name: "Tern", dependencies: ["TernFFI"], path: "Sources/Tern"),
    ]
)
